"""Classifiers of a site, with their groups, image counts and model versions."""

from __future__ import annotations

from fastapi import APIRouter, status

from camfleet_hub.auth.deps import SiteAdminDep, SiteViewerDep
from camfleet_hub.core.deps import SessionDep
from camfleet_hub.datasets import crud
from camfleet_hub.datasets import public as views
from camfleet_hub.datasets.schemas import ClassifierCreate, ClassifierDetail, ClassifierPublic

router = APIRouter(tags=["classifiers"])


@router.post(
    "/sites/{site}/classifiers",
    operation_id="create_classifier",
    response_model=ClassifierPublic,
    status_code=status.HTTP_201_CREATED,
)
def create_classifier(site: str, body: ClassifierCreate, session: SessionDep, _user: SiteAdminDep) -> ClassifierPublic:
    clf = crud.create_classifier(session, crud.get_site(session, site), body.name)
    return views.classifier(clf)


@router.get("/sites/{site}/classifiers", operation_id="list_classifiers", response_model=list[ClassifierPublic])
def list_classifiers(site: str, session: SessionDep, _user: SiteViewerDep) -> list[ClassifierPublic]:
    found = crud.get_site(session, site)
    return [views.classifier(c) for c in crud.list_classifiers(session, found)]


@router.get("/sites/{site}/classifiers/{clf}", operation_id="get_classifier", response_model=ClassifierDetail)
def get_classifier(site: str, clf: str, session: SessionDep, _user: SiteViewerDep) -> ClassifierDetail:
    return views.classifier_detail(session, crud.get_classifier(session, site, clf))
