"""Raw image bytes by content hash (what the trainer downloads)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from camfleet_hub.auth.deps import CurrentUserDep, visible_site_ids
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import ForbiddenError, InvalidError
from camfleet_hub.core.store.base import object_key
from camfleet_hub.datasets import media
from camfleet_hub.datasets.models import Classifier, Frame, Image

router = APIRouter(tags=["blobs"])


@router.get(
    "/blobs/{sha256}",
    operation_id="get_blob",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the stored bytes"}},
)
def get_blob(sha256: str, services: ServicesDep, session: SessionDep, user: CurrentUserDep) -> Response:
    """Hub admins (trainers' every-site tokens) read any blob; others only images or frames of their sites."""
    try:
        object_key(sha256)
    except ValueError as exc:
        raise InvalidError(f"sha256: {exc}") from None
    visible = visible_site_ids(user, session)
    if visible is not None:
        in_images = select(Image.id).join(Classifier, Classifier.id == Image.classifier_id)
        in_images = in_images.where(Image.sha256 == sha256, Classifier.site_id.in_(visible)).limit(1)
        in_frames = select(Frame.id).where(Frame.sha256 == sha256, Frame.site_id.in_(visible)).limit(1)
        if session.scalar(in_images) is None and session.scalar(in_frames) is None:
            raise ForbiddenError(f"user {user.name!r}: sha256={sha256!r} is not an image of a site you can read")
    data = media.original_bytes(services.store, sha256)
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={"Cache-Control": "private, max-age=31536000, immutable", "ETag": f'"{sha256}"'},
    )
