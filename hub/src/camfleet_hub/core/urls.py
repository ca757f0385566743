"""The REST paths that responses and announcements point at, spelled in one place."""

from __future__ import annotations

from camfleet_contract.rest import API_PREFIX as API_PREFIX  # the hub spells every path from this one prefix
from camfleet_contract.rest import MODEL_BUNDLE


def model_bundle(model_id: int) -> str:
    return MODEL_BUNDLE.url_path(model_id=model_id)


def image_content(image_id: int) -> str:
    return f"{API_PREFIX}/images/{image_id}/content"


def image_thumbnail(image_id: int) -> str:
    return f"{API_PREFIX}/images/{image_id}/thumbnail"


def frame_image(frame_id: str) -> str:
    return f"{API_PREFIX}/frames/{frame_id}/image"


def frame_thumbnail(frame_id: str) -> str:
    return f"{API_PREFIX}/frames/{frame_id}/thumbnail"


def model_confusion(model_id: int) -> str:
    return f"{API_PREFIX}/models/{model_id}/confusion.png"
