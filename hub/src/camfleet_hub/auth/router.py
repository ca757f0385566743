"""Log in / out, who am I, users and their site roles, API tokens.

Who may do what: hub admins manage users and every-site tokens; a site admin grants roles in that site (and
sees only the users and roles of sites they administer); anyone logged in makes tokens for sites where they hold at
least the token's role, and changes their own password (giving the current one). All of this needs a logged-in
session: an API token gets 403 on every route here except login, logout and ``/auth/me``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import select

from camfleet_hub.auth import callers, logins, tokens, users
from camfleet_hub.auth.deps import (
    SESSION_COOKIE,
    CurrentUserDep,
    SessionHubAdminDep,
    SessionSiteAdminDep,
    SessionUserDep,
    client_address,
)
from camfleet_hub.auth.models import Role
from camfleet_hub.auth.schemas import (
    LoginRequest,
    MePublic,
    SiteRoleSet,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.deps import SessionDep, SettingsDep
from camfleet_hub.core.errors import ForbiddenError
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Site

router = APIRouter(tags=["auth"])

CSRF_HEADER = "X-CSRF-Token"


def set_session_cookie(response: Response, secret: str, settings: HubSettings) -> None:
    """HttpOnly (no script reads it), SameSite=Lax, Secure when configured; the session's CSRF token travels in
    the ``X-CSRF-Token`` response header (API clients echo it on every state-changing request)."""
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(settings.auth.session_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=settings.auth.secure_cookies,
        path="/",
    )
    response.headers[CSRF_HEADER] = logins.csrf_token(secret)


@router.post("/auth/login", operation_id="login", response_model=UserPublic)
def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
) -> UserPublic:
    """Check username and password; sets the session cookie and answers the session's CSRF token in the
    ``X-CSRF-Token`` header. 401 on a wrong pair, 429 after too many failures (per name, address or both)."""
    user, secret = logins.login(session, settings.auth, body.username, body.password, client_address(request, settings))
    set_session_cookie(response, secret, settings)
    return users.user_view(session, user)


@router.post("/auth/logout", operation_id="logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, session: SessionDep) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        logins.logout(session, cookie)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/auth/me", operation_id="get_me", response_model=MePublic)
def me(request: Request, response: Response, user: CurrentUserDep, session: SessionDep) -> MePublic:
    """Who is calling; for a session, the ``X-CSRF-Token`` header carries its CSRF token again."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if user.session_id is not None and cookie:
        response.headers[CSRF_HEADER] = logins.csrf_token(cookie)
    every = user.roles.role if isinstance(user.roles, callers.EverySite) else None
    roles: dict[str, str] = {}
    if user.roles and every is None:
        rows = session.execute(select(Site.id, Site.name).where(Site.id.in_(list(user.roles))))
        names = {site_id: name for site_id, name in rows}
        roles = {names[s]: r.value for s, r in user.roles.items() if s in names}
    return MePublic.model_validate(
        {
            "name": user.name,
            "user_id": user.user_id,
            "is_admin": user.admin,
            "roles": roles,
            "every_site": every.value if every else None,
        }
    )


# --------------------------------------------------------------------------- users


@router.get("/users", operation_id="list_users", response_model=list[UserPublic])
def list_users(user: SessionUserDep, session: SessionDep) -> list[UserPublic]:
    """Hub admins see every user; a site admin only users with a role in a site they administer, and only
    those roles."""
    return users.visible_users(session, user)


@router.post("/users", operation_id="create_user", response_model=UserPublic, status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, session: SessionDep, _admin: SessionHubAdminDep) -> UserPublic:
    return users.user_view(session, users.create_user(session, body.username, body.password, is_admin=body.is_admin))


@router.patch("/users/{user_id}", operation_id="update_user", response_model=UserPublic)
def update_user(
    user_id: int,
    body: UserUpdate,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    user: SessionUserDep,
) -> UserPublic:
    """Hub admins change anything; a user may change only their own password, giving ``current_password``.
    A new password ends the user's sessions and revokes their tokens; a self-change gets a fresh session."""
    own = user.user_id == user_id
    own_password_only = own and body.disabled is None and body.is_admin is None
    if not (user.admin or own_password_only):
        raise ForbiddenError(f"user {user.name!r} may only change their own password")
    found = users.get_user(session, user_id)
    if own and body.password is not None:
        users.check_current_password(found, body.current_password)
    updated = users.update_user(session, found, password=body.password, disabled=body.disabled, is_admin=body.is_admin)
    if own and body.password is not None and not updated.disabled:
        set_session_cookie(response, logins.new_session(session, updated, settings.auth), settings)
    return users.user_view(session, updated)


@router.delete("/users/{user_id}", operation_id="delete_user", status_code=status.HTTP_204_NO_CONTENT)
def delete_user(user_id: int, session: SessionDep, _admin: SessionHubAdminDep) -> Response:
    """Removes the user with their sessions and tokens."""
    users.delete_user(session, users.get_user(session, user_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/users/{user_id}/roles/{site}", operation_id="set_user_site_role", response_model=UserPublic)
def set_site_role(
    user_id: int, site: str, body: SiteRoleSet, session: SessionDep, admin: SessionSiteAdminDep
) -> UserPublic:
    """Grant a role in the site (or remove it with ``null``); needs the admin role in that site."""
    found = users.get_user(session, user_id)
    site_row = crud.get_site(session, site)
    users.set_site_role(session, found, site_row, Role(body.role) if body.role else None)
    only = None if admin.admin else sorted(s for s, r in admin.roles.items() if r == Role.ADMIN)
    return users.user_view(session, found, only)


# --------------------------------------------------------------------------- tokens


@router.post("/tokens", operation_id="create_token", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, session: SessionDep, user: SessionUserDep) -> TokenCreated:
    """A bearer token for a script or agent; the secret is in this answer only. Tokens never create tokens."""
    site = crud.get_site(session, body.site) if body.site is not None else None
    token, secret = tokens.create_token(session, user, body.name, site, Role(body.role))
    return tokens.created_view(session, token, secret)


@router.get("/tokens", operation_id="list_tokens", response_model=list[TokenPublic])
def list_tokens(session: SessionDep, user: SessionUserDep) -> list[TokenPublic]:
    return [tokens.token_view(session, t) for t in tokens.list_tokens(session, user)]


@router.delete("/tokens/{token_id}", operation_id="revoke_token", response_model=TokenPublic)
def revoke_token(token_id: int, session: SessionDep, user: SessionUserDep) -> TokenPublic:
    """Revoke (the row stays, marked, so logs can still name it)."""
    return tokens.token_view(session, tokens.revoke_token(session, user, token_id))
