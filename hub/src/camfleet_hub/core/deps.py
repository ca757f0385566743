"""Typed FastAPI dependencies on the service container: the services, settings and a session per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.container import HubServices


async def get_services(request: Request) -> HubServices:
    """The ``HubServices`` that ``create_app`` was built with. ``async`` (like ``get_settings``): FastAPI runs a
    plain ``def`` dependency on its thread pool, and each such hop costs a busy hub more than this look-up."""
    services: HubServices = request.app.state.services
    return services


ServicesDep = Annotated[HubServices, Depends(get_services)]


async def get_settings(services: ServicesDep) -> HubSettings:
    return services.settings


SettingsDep = Annotated[HubSettings, Depends(get_settings)]


async def get_session(services: ServicesDep) -> AsyncIterator[Session]:
    """One session per request, closed (and rolled back if uncommitted) afterwards. Making a session opens no
    connection; closing one that holds a connection (a rollback on the database) runs on the thread pool."""
    session = services.sessions()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


SessionDep = Annotated[Session, Depends(get_session)]
