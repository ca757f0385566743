"""The auth seam as FastAPI dependencies: the current caller from a bearer token or the session cookie, role checks."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from camfleet_hub.auth.callers import EverySite, caller_of_cookie, caller_of_token
from camfleet_hub.auth.models import Role
from camfleet_hub.auth.principal import Principal
from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.deps import SessionDep, SettingsDep
from camfleet_hub.core.errors import ForbiddenError, UnauthenticatedError

SESSION_COOKIE = "camfleet_session"


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
        return caller
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        caller = caller_of_cookie(session, cookie)
        if caller is not None:
            return caller
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
