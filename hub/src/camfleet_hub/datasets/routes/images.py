"""Dataset images: list, move between groups/statuses, original bytes and thumbnails."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from camfleet_hub.auth.deps import CurrentUserDep, SiteViewerDep, require_in_classifier
from camfleet_hub.auth.models import Role
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.datasets import crud, image_changes, media
from camfleet_hub.datasets import public as views
from camfleet_hub.datasets.models import Classifier, ImageStatus
from camfleet_hub.datasets.schemas import ImagePublic, ImageUpdate

router = APIRouter(tags=["images"])

IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable"}  # behind auth: no shared caches


@router.get("/sites/{site}/classifiers/{clf}/images", operation_id="list_images", response_model=list[ImagePublic])
def list_images(
    site: str,
    clf: str,
    session: SessionDep,
    _user: SiteViewerDep,
    status: ImageStatus | None = None,
    group: str | None = None,
    limit: Annotated[int, Query(ge=1, le=crud.MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
    after_id: Annotated[int | None, Query(ge=0, description="keyset paging: the last id of the previous page")] = None,
) -> list[ImagePublic]:
    classifier = crud.get_classifier(session, site, clf)
    rows = crud.list_images(session, classifier, status, group, limit, offset, after_id)
    return [views.image(img, classifier.name) for img in rows]


@router.patch("/images/{image_id}", operation_id="update_image", response_model=ImagePublic)
def update_image(image_id: int, body: ImageUpdate, session: SessionDep, user: CurrentUserDep) -> ImagePublic:
    """Change one image's status and/or group (recorded in the history); ``expected_*`` guard concurrent edits."""
    image = crud.get_image(session, image_id)
    classifier = session.get(Classifier, image.classifier_id)
    assert classifier is not None
    user.require(classifier.site_id, Role.LABELLER, classifier.site.name)
    expected = None
    if body.expected_status is not None or body.expected_updated_at is not None:
        expected = image_changes.Expected(status=body.expected_status, updated_at=body.expected_updated_at)
    image_changes.edit_image(session, image, body.status, body.group, user.name, expected)
    session.refresh(image)
    return views.image(image, classifier.name)


@router.get(
    "/images/{image_id}/content",
    operation_id="get_image_content",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}, "description": "the original file"}},
)
def image_content(image_id: int, session: SessionDep, services: ServicesDep, user: CurrentUserDep) -> Response:
    image = crud.get_image(session, image_id)
    require_in_classifier(user, session, image.classifier_id, Role.VIEWER)
    data = media.original_bytes(services.store, image.sha256)
    mime = f"image/{image.blob.format.lower()}"
    return Response(content=data, media_type=mime, headers={**IMMUTABLE, "ETag": f'"{image.sha256}"'})


@router.get(
    "/images/{image_id}/thumbnail",
    operation_id="get_image_thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "a JPEG of at most 256 px"}},
)
def image_thumbnail(image_id: int, session: SessionDep, services: ServicesDep, user: CurrentUserDep) -> Response:
    image = crud.get_image(session, image_id)
    require_in_classifier(user, session, image.classifier_id, Role.VIEWER)
    return Response(content=services.thumbnails.get(session, image.sha256), media_type="image/jpeg", headers=IMMUTABLE)
