"""Typed FastAPI dependencies: the shared services, settings, a session per request, and the auth seam."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from camfleet_hub.config import HubSettings
from camfleet_hub.services.classify import RuntimeCache
from camfleet_hub.services.media import ThumbnailCache

if TYPE_CHECKING:
    from camfleet_hub.app import HubServices


@dataclass
class ApiState:
    """What the API keeps for itself between requests (loaded model runtimes, thumbnail map)."""

    runtimes: RuntimeCache
    thumbnails: ThumbnailCache


def get_services(request: Request) -> HubServices:
    """The ``HubServices`` that ``create_app`` was built with."""
    return request.app.state.services  # type: ignore[no-any-return]


if TYPE_CHECKING:
    ServicesDep = Annotated[HubServices, Depends(get_services)]
else:  # camfleet_hub.app imports the API, so the class is only named for type checkers
    ServicesDep = Annotated[object, Depends(get_services)]


def get_settings(services: ServicesDep) -> HubSettings:
    return services.settings


SettingsDep = Annotated[HubSettings, Depends(get_settings)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """One session per request, closed (and rolled back if uncommitted) afterwards."""
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_api_state(request: Request) -> ApiState:
    return request.app.state.api  # type: ignore[no-any-return]


ApiStateDep = Annotated[ApiState, Depends(get_api_state)]


@dataclass(frozen=True)
class Principal:
    """Who is calling. Until users and tokens exist every caller is the anonymous administrator."""

    name: str = "anonymous"
    admin: bool = True


def get_current_user(request: Request) -> Principal:
    """The auth seam: a later issue reads a token here and raises 401/403; routes already depend on it."""
    return Principal()


CurrentUserDep = Annotated[Principal, Depends(get_current_user)]
