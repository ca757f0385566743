"""Cameras of a site (also registered from agents' status messages by the ingest worker)."""

from __future__ import annotations

from fastapi import APIRouter, status

from camfleet_hub.auth.deps import SiteAdminDep, SiteViewerDep
from camfleet_hub.core.deps import SessionDep
from camfleet_hub.datasets import crud
from camfleet_hub.datasets import public as views
from camfleet_hub.datasets.schemas import CameraCreate, CameraPublic, CameraUpdate

router = APIRouter(tags=["cameras"])


@router.post(
    "/sites/{site}/cameras",
    operation_id="create_camera",
    response_model=CameraPublic,
    status_code=status.HTTP_201_CREATED,
)
def create_camera(site: str, body: CameraCreate, session: SessionDep, _user: SiteAdminDep) -> CameraPublic:
    found = crud.get_site(session, site)
    return views.camera(crud.create_camera(session, found, body.name), found)


@router.get("/sites/{site}/cameras", operation_id="list_cameras", response_model=list[CameraPublic])
def list_cameras(site: str, session: SessionDep, _user: SiteViewerDep) -> list[CameraPublic]:
    found = crud.get_site(session, site)
    return [views.camera(c, found) for c in crud.list_cameras(session, found)]


@router.patch("/sites/{site}/cameras/{camera}", operation_id="update_camera", response_model=CameraPublic)
def update_camera(site: str, camera: str, body: CameraUpdate, session: SessionDep, _user: SiteAdminDep) -> CameraPublic:
    """Set the agent that owns the camera (``null``: release it; the next status that names it claims it). On
    Mosquitto it takes effect once exported (``camfleet-hub mqtt export-mosquitto --watch`` does it within seconds)."""
    found = crud.get_site(session, site)
    return views.camera(crud.set_camera_owner(session, crud.get_camera(session, found, camera), body.agent), found)
