"""Groups (classes) of a classifier."""

from __future__ import annotations

from fastapi import APIRouter, status

from camfleet_hub.api.deps import SessionDep, SiteLabellerDep, SiteViewerDep
from camfleet_hub.schemas import GroupCreate, GroupPublic
from camfleet_hub.services import crud, views

router = APIRouter(tags=["groups"])


@router.post(
    "/sites/{site}/classifiers/{clf}/groups",
    operation_id="create_group",
    response_model=GroupPublic,
    status_code=status.HTTP_201_CREATED,
)
def create_group(site: str, clf: str, body: GroupCreate, session: SessionDep, _user: SiteLabellerDep) -> GroupPublic:
    classifier = crud.get_classifier(session, site, clf)
    group = crud.create_group(session, classifier, body.name, body.parent, body.common)
    return GroupPublic.model_validate(next(g for g in views.groups(session, classifier) if g["id"] == group.id))


@router.get("/sites/{site}/classifiers/{clf}/groups", operation_id="list_groups", response_model=list[GroupPublic])
def list_groups(site: str, clf: str, session: SessionDep, _user: SiteViewerDep) -> list[GroupPublic]:
    classifier = crud.get_classifier(session, site, clf)
    return [GroupPublic.model_validate(g) for g in views.groups(session, classifier)]
