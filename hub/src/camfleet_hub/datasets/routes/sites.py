"""Sites; creating one announces the models its agents should run."""

from __future__ import annotations

from fastapi import APIRouter, status

from camfleet_hub.auth.deps import CurrentUserDep, HubAdminDep, SiteViewerDep, visible_site_ids
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.schemas import SiteCreate, SitePublic
from camfleet_hub.training import announce

router = APIRouter(tags=["sites"])


@router.post("/sites", operation_id="create_site", response_model=SitePublic, status_code=status.HTTP_201_CREATED)
def create_site(body: SiteCreate, session: SessionDep, services: ServicesDep, _admin: HubAdminDep) -> SitePublic:
    site = crud.create_site(session, body.name)
    announce.announce_site(services, session, site)
    return SitePublic.model_validate(site)


@router.get("/sites", operation_id="list_sites", response_model=list[SitePublic])
def list_sites(session: SessionDep, user: CurrentUserDep) -> list[SitePublic]:
    """The sites the caller holds a role in (hub admins: every site)."""
    visible = visible_site_ids(user, session)
    return [SitePublic.model_validate(s) for s in crud.list_sites(session) if visible is None or s.id in visible]


@router.get("/sites/{site}", operation_id="get_site", response_model=SitePublic)
def get_site(site: str, session: SessionDep, _user: SiteViewerDep) -> SitePublic:
    return SitePublic.model_validate(crud.get_site(session, site))
