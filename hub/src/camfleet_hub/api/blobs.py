"""Raw image bytes by content hash (what the trainer downloads)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from camfleet_hub.api.deps import ServicesDep
from camfleet_hub.services import media
from camfleet_hub.services.errors import InvalidError
from camfleet_hub.store.base import object_key

router = APIRouter(tags=["blobs"])


@router.get(
    "/blobs/{sha256}",
    operation_id="get_blob",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the stored bytes"}},
)
def get_blob(sha256: str, services: ServicesDep) -> Response:
    try:
        object_key(sha256)
    except ValueError as exc:
        raise InvalidError(f"sha256: {exc}") from None
    data = media.original_bytes(services.store, sha256)
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={"Cache-Control": "public, max-age=31536000, immutable", "ETag": f'"{sha256}"'},
    )
