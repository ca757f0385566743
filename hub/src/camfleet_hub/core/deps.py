"""Typed FastAPI dependencies: the shared services, settings, a session per request, and the auth seam."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from camfleet_hub.auth.models import Role
from camfleet_hub.auth.service import Caller, EverySite, caller_of_cookie, caller_of_token
from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.errors import ForbiddenError, UnauthenticatedError
from camfleet_hub.datasets.media import ThumbnailCache
from camfleet_hub.serving.classify import RuntimeCache

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

    With ``auth.enabled = false`` every caller is the anonymous administrator (the default values).
    ``token_id`` / ``session_id`` say which credential it came with (account routes want a session).
    """

    name: str = "anonymous"
    admin: bool = True
    user_id: int | None = None
    roles: Mapping[int, Role] = field(default_factory=dict)
    token_id: int | None = None
    session_id: int | None = None

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


SESSION_COOKIE = "camfleet_session"


def principal_of(caller: Caller) -> Principal:
    return Principal(
        name=caller.name,
        admin=caller.admin,
        user_id=caller.user_id,
        roles=caller.roles,
        token_id=caller.token_id,
        session_id=caller.session_id,
    )


def get_current_user(request: Request, settings: SettingsDep, session: SessionDep) -> Principal:
    """The auth seam: a bearer token (``Authorization: Bearer …``) or the session cookie; 401 when neither is valid."""
    principal = _authenticate(request, settings, session)
    request.state.principal = principal  # the page templates show who is logged in
    return principal


def _authenticate(request: Request, settings: HubSettings, session: Session) -> Principal:
    if not settings.auth.enabled:
        return Principal()
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise UnauthenticatedError("Authorization header: expected 'Bearer <token>'")
        caller = caller_of_token(session, secret.strip())
        if caller is None:
            raise UnauthenticatedError("the bearer token is unknown or revoked")
        return principal_of(caller)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        caller = caller_of_cookie(session, cookie)
        if caller is not None:
            return principal_of(caller)
        raise UnauthenticatedError("the login session has expired; log in again")
    raise UnauthenticatedError("log in (POST /api/v1/auth/login) or send 'Authorization: Bearer <token>'")


CurrentUserDep = Annotated[Principal, Depends(get_current_user)]

ACCOUNTS_NEED_A_SESSION = (
    "users, roles, passwords and tokens are managed from a logged-in session only, never with an API token"
)


def get_session_user(request: Request, user: CurrentUserDep, settings: SettingsDep) -> Principal:
    """The caller of an account route: a logged-in session (403 for a bearer token, whatever its role)."""
    if settings.auth.enabled and (user.token_id is not None or user.session_id is None):
        raise ForbiddenError(f"{user.name!r}: {ACCOUNTS_NEED_A_SESSION}")
    return user


SessionUserDep = Annotated[Principal, Depends(get_session_user)]


def _site_role(role: Role) -> Callable[[Request, Principal, Session], Principal]:
    """A dependency that resolves the ``{site}`` path parameter and requires ``role`` there."""

    def check(request: Request, user: CurrentUserDep, session: SessionDep) -> Principal:
        from camfleet_hub.datasets import crud

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


def get_session_hub_admin(user: SessionUserDep) -> Principal:
    user.require_admin()
    return user


SessionHubAdminDep = Annotated[Principal, Depends(get_session_hub_admin)]


def _session_site_admin(request: Request, user: SessionUserDep, session: SessionDep) -> Principal:
    from camfleet_hub.datasets import crud

    site = crud.get_site(session, request.path_params["site"])
    user.require(site.id, Role.ADMIN, site.name)
    return user


SessionSiteAdminDep = Annotated[Principal, Depends(_session_site_admin)]


@lru_cache(maxsize=16)
def _networks(items: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(i, strict=False) for i in items)


def _trusted(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def client_address(request: Request, settings: HubSettings) -> str:
    """The caller's address: the TCP peer, or, only when the peer is one of ``auth.trusted_proxies``, the
    right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy (the left part is client-written)."""
    peer = request.client.host if request.client else "unknown"
    networks = _networks(tuple(settings.auth.trusted_proxies))
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a malformed hop: do not let it pick the key
    return peer


# Checks for routes keyed by a row id: load the row, then ask for the role in the row's site.


def require_in_classifier(user: Principal, session: Session, classifier_id: int, role: Role) -> None:
    """403 unless the caller holds ``role`` in the site of that classifier."""
    from camfleet_hub.datasets.models import Classifier

    if user.admin:
        return
    clf = session.get(Classifier, classifier_id)
    if clf is None:  # the row that pointed here was deleted meanwhile; nothing to grant
        raise ForbiddenError(f"user {user.name!r}: classifier id={classifier_id} is gone")
    user.require(clf.site_id, role, clf.site.name)


def require_in_site_id(user: Principal, session: Session, site_id: int, role: Role) -> None:
    from camfleet_hub.datasets.models import Site

    if user.admin:
        return
    site = session.get(Site, site_id)
    user.require(site_id, role, site.name if site else "")


def visible_site_ids(user: Principal, session: Session) -> list[int] | None:
    """Ids of the sites the caller may read (None: every site)."""
    from sqlalchemy import select

    from camfleet_hub.datasets.models import Site

    if user.admin or isinstance(user.roles, EverySite):
        return None
    ids = set(session.scalars(select(Site.id)))
    return sorted(s for s in user.roles if s in ids)
