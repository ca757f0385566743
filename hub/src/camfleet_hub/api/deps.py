"""Typed FastAPI dependencies: the shared services, settings, a session per request, and the auth seam."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from camfleet_hub.config import HubSettings
from camfleet_hub.db.models import Role
from camfleet_hub.services.classify import RuntimeCache
from camfleet_hub.services.errors import ForbiddenError
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
    """Who is calling: a logged-in user or an API token, with a role per site id (``admin``: every site).

    Until auth lands (issue 4) every caller is the anonymous administrator.
    """

    name: str = "anonymous"
    admin: bool = True
    user_id: int | None = None
    roles: Mapping[int, Role] = field(default_factory=dict)

    def role_in(self, site_id: int) -> Role | None:
        """The caller's role in that site (hub admins are admins everywhere)."""
        return Role.ADMIN if self.admin else self.roles.get(site_id)

    def require(self, site_id: int, role: Role, site_name: str = "") -> None:
        """Raise 403 unless the caller holds ``role`` (or a stronger one) in the site."""
        held = self.role_in(site_id)
        if held is None or held.rank < role.rank:
            where = f"site {site_name!r}" if site_name else f"site id={site_id}"
            raise ForbiddenError(f"user {self.name!r} needs the {role.value} role in {where}")

    def require_admin(self) -> None:
        """Raise 403 unless the caller is a hub-wide administrator."""
        if not self.admin:
            raise ForbiddenError(f"user {self.name!r} is not a hub administrator")


def get_current_user(request: Request) -> Principal:
    """The auth seam: reads the session cookie or bearer token and raises 401 when there is none."""
    return Principal()


CurrentUserDep = Annotated[Principal, Depends(get_current_user)]


def _site_role(role: Role) -> Callable[[Request, Principal, Session], Principal]:
    """A dependency that resolves the ``{site}`` path parameter and requires ``role`` there."""

    def check(request: Request, user: CurrentUserDep, session: SessionDep) -> Principal:
        from camfleet_hub.services import crud

        site = crud.get_site(session, request.path_params["site"])
        user.require(site.id, role, site.name)
        return user

    return check


# Route dependencies for paths with a ``{site}`` parameter.
SiteViewerDep = Annotated[Principal, Depends(_site_role(Role.VIEWER))]
SiteLabellerDep = Annotated[Principal, Depends(_site_role(Role.LABELLER))]
SiteAdminDep = Annotated[Principal, Depends(_site_role(Role.ADMIN))]


def get_hub_admin(user: CurrentUserDep) -> Principal:
    user.require_admin()
    return user


HubAdminDep = Annotated[Principal, Depends(get_hub_admin)]
