"""Recent camera frames, their JPEGs and cached thumbnails."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from camfleet_hub.auth.deps import CurrentUserDep, require_in_site_id
from camfleet_hub.auth.models import Role
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import ForbiddenError
from camfleet_hub.datasets import crud, media
from camfleet_hub.datasets.schemas import FramePublic

router = APIRouter(tags=["frames"])

IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable"}  # behind auth: no shared caches


@router.get("/frames", operation_id="list_frames", response_model=list[FramePublic])
def list_frames(
    session: SessionDep,
    user: CurrentUserDep,
    site: str | None = None,
    camera: str | None = None,
    limit: Annotated[int, Query(ge=1, le=media.MAX_FRAMES)] = 50,
) -> list[FramePublic]:
    """Newest frames first; callers without a role in every site name the ``site``."""
    if site is not None:
        found = crud.get_site(session, site)
        require_in_site_id(user, session, found.id, Role.VIEWER)
    elif not user.admin:
        raise ForbiddenError(f"user {user.name!r}: site: name the site whose frames to list (?site=...)")
    return media.list_frames(session, site, camera, limit)


@router.get(
    "/frames/{frame_id}/image",
    operation_id="get_frame_image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "the frame as the agent sent it"}},
)
def frame_image(frame_id: str, session: SessionDep, services: ServicesDep, user: CurrentUserDep) -> Response:
    frame = media.get_frame(session, frame_id)
    require_in_site_id(user, session, frame.site_id, Role.VIEWER)
    return Response(
        content=media.original_bytes(services.store, frame.sha256), media_type="image/jpeg", headers=IMMUTABLE
    )


@router.get(
    "/frames/{frame_id}/thumbnail",
    operation_id="get_frame_thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "a JPEG of at most 256 px"}},
)
def frame_thumbnail(frame_id: str, session: SessionDep, services: ServicesDep, user: CurrentUserDep) -> Response:
    frame = media.get_frame(session, frame_id)
    require_in_site_id(user, session, frame.site_id, Role.VIEWER)
    return Response(content=services.thumbnails.get(session, frame.sha256), media_type="image/jpeg", headers=IMMUTABLE)
