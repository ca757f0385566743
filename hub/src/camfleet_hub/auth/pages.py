"""The login page, log out, and the Users & tokens page (server-rendered, form posts → 303 → GET).

Browsers without a valid session are sent to ``/login?next=<page>``; API callers get a 401 JSON answer.
Every form here needs a session (a bearer token gets 403) and carries the session's CSRF token
(``core/browser_guard.py`` checks it before the route runs).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from camfleet_hub.auth import logins, tokens, users
from camfleet_hub.auth.deps import SESSION_COOKIE, SessionUserDep, client_address
from camfleet_hub.auth.models import Role
from camfleet_hub.auth.principal import Principal
from camfleet_hub.auth.router import set_session_cookie
from camfleet_hub.auth.schemas import TokenCreated
from camfleet_hub.core.deps import SessionDep, SettingsDep
from camfleet_hub.core.errors import ForbiddenError, InvalidError, ServiceError, UnauthenticatedError
from camfleet_hub.core.urls import API_PREFIX
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Site
from camfleet_hub.web.render import csrf_field, page_path, render, templates

router = APIRouter(include_in_schema=False)

__all__ = ["csrf_field", "router", "templates"]  # fleet.pages still takes templates from here


def safe_next(next_url: str | None, default: str = "/") -> str:
    """``next_url`` when it is a path on this hub (no scheme, no ``//host``), else ``default``."""
    ok = next_url is not None and next_url.startswith("/") and not next_url.startswith("//") and "\\" not in next_url
    return next_url if ok and next_url else default


# --------------------------------------------------------------------------- login / logout


@router.get("/login", response_class=HTMLResponse, name="ui.login")
def login_page(request: Request, next: str | None = None) -> HTMLResponse:  # noqa: A002 - the query's name
    return render(request, "login.html", {"next": safe_next(next), "username": ""})


@router.post("/login", response_model=None, name="ui.login_form")
def login_form(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next_url: Annotated[str | None, Form(alias="next")] = None,
) -> Response:
    target = safe_next(next_url)
    try:
        _user, secret = logins.login(session, settings.auth, username, password, client_address(request, settings))
    except ServiceError as exc:
        context = {"next": target, "username": username, "error": exc.detail}
        page = render(request, "login.html", context, exc.status_code)
        if isinstance(exc, logins.LoginRateLimited):
            page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, secret, settings)
    return response


@router.post("/logout", name="ui.logout")
def logout_form(request: Request, session: SessionDep) -> RedirectResponse:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        logins.logout(session, cookie)
    response = RedirectResponse(page_path(request, "ui.login"), status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --------------------------------------------------------------------------- users & tokens page


def _page(
    request: Request,
    session: SessionDep,
    user: Principal,
    *,
    error: str | None = None,
    created: TokenCreated | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    sites = list(session.scalars(select(Site).order_by(Site.name)))
    admin_sites = [s.name for s in sites if user.role_in(s.id) == Role.ADMIN]
    token_sites = [s.name for s in sites if user.role_in(s.id) is not None]
    shown_users = users.visible_users(session, user) if (user.admin or admin_sites) else []
    shown_tokens = [tokens.token_view(session, t) for t in tokens.list_tokens(session, user)]
    context = {
        "me": user,
        "users": shown_users,
        "tokens": shown_tokens,
        "admin_sites": admin_sites,
        "token_sites": token_sites,
        "roles": [r.value for r in Role],
        "error": error,
        "created": created,
    }
    return render(request, "users.html", context, status_code)


@router.get("/ui/users", response_class=HTMLResponse, name="ui.users")
def users_page(request: Request, session: SessionDep, user: SessionUserDep) -> HTMLResponse:
    return _page(request, session, user)


def _done(request: Request) -> RedirectResponse:
    return RedirectResponse(page_path(request, "ui.users"), status_code=303)


@router.post("/ui/users", response_model=None, name="ui.create_user")
def create_user(
    request: Request,
    session: SessionDep,
    user: SessionUserDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    is_admin: Annotated[str, Form()] = "",
) -> Response:
    try:
        user.require_admin()
        users.create_user(session, username.strip(), password, is_admin=bool(is_admin))
    except ServiceError as exc:
        session.rollback()
        return _page(request, session, user, error=exc.detail, status_code=exc.status_code)
    return _done(request)


@router.post("/ui/users/{user_id}", response_model=None, name="ui.update_user")
def update_user(
    request: Request,
    user_id: int,
    session: SessionDep,
    user: SessionUserDep,
    settings: SettingsDep,
    action: Annotated[str, Form()],
    password: Annotated[str, Form()] = "",
    current_password: Annotated[str, Form()] = "",
) -> Response:
    """One form per button: ``password``, ``disable``, ``enable``, ``make-admin``, ``drop-admin``, ``delete``.
    Your own password needs the current one; afterwards this browser gets a fresh session, others are out."""
    own = user.user_id == user_id
    try:
        if not (user.admin or (action == "password" and own)):
            raise ForbiddenError(f"user {user.name!r} may only change their own password")
        found = users.get_user(session, user_id)
        if action == "password":
            if own:
                users.check_current_password(found, current_password)
            users.update_user(session, found, password=password)
            if own:
                response = _done(request)
                set_session_cookie(response, logins.new_session(session, found, settings.auth), settings)
                return response
        elif action in ("disable", "enable"):
            users.update_user(session, found, disabled=action == "disable")
        elif action in ("make-admin", "drop-admin"):
            users.update_user(session, found, is_admin=action == "make-admin")
        elif action == "delete":
            users.delete_user(session, found)
        else:
            raise InvalidError(f"action={action!r} is not a user action")
    except ServiceError as exc:
        session.rollback()
        return _page(request, session, user, error=exc.detail, status_code=exc.status_code)
    return _done(request)


@router.post("/ui/users/{user_id}/role", response_model=None, name="ui.set_role")
def set_role(
    request: Request,
    user_id: int,
    session: SessionDep,
    user: SessionUserDep,
    site: Annotated[str, Form()],
    role: Annotated[str, Form()] = "",
) -> Response:
    """Grant a role in a site (empty role: remove it); needs the admin role in that site."""
    try:
        found_site = crud.get_site(session, site)
        user.require(found_site.id, Role.ADMIN, found_site.name)
        grant = users.checked_role(role) if role else None
        users.set_site_role(session, users.get_user(session, user_id), found_site, grant)
    except ServiceError as exc:
        session.rollback()
        return _page(request, session, user, error=exc.detail, status_code=exc.status_code)
    return _done(request)


@router.post("/ui/tokens", response_model=None, name="ui.create_token")
def create_token(
    request: Request,
    session: SessionDep,
    user: SessionUserDep,
    name: Annotated[str, Form()] = "",
    site: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "viewer",
) -> Response:
    """Shows the page with the new secret once (not a redirect: the secret must not be stored anywhere)."""
    try:
        found = crud.get_site(session, site) if site else None
        token, secret = tokens.create_token(session, user, name, found, users.checked_role(role))
    except ServiceError as exc:
        session.rollback()
        return _page(request, session, user, error=exc.detail, status_code=exc.status_code)
    created = tokens.created_view(session, token, secret)
    response = _page(request, session, user, created=created, status_code=201)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/ui/tokens/{token_id}/revoke", response_model=None, name="ui.revoke_token")
def revoke_token(request: Request, token_id: int, session: SessionDep, user: SessionUserDep) -> Response:
    try:
        tokens.revoke_token(session, user, token_id)
    except ServiceError as exc:
        session.rollback()
        return _page(request, session, user, error=exc.detail, status_code=exc.status_code)
    return _done(request)


# --------------------------------------------------------------------------- 401 / 403 for browsers


def _is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX + "/") or request.url.path == API_PREFIX


async def _unauthenticated(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UnauthenticatedError)
    if _is_api(request):
        return JSONResponse(status_code=401, content={"detail": exc.detail}, headers={"WWW-Authenticate": "Bearer"})
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = back if request.method == "GET" else page_path(request, "ui.overview")
    response = RedirectResponse(page_path(request, "ui.login") + f"?next={quote(target, safe='/')}", status_code=303)
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def _forbidden(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ForbiddenError)
    if _is_api(request):
        return JSONResponse(status_code=403, content={"detail": exc.detail})
    return render(request, "forbidden.html", {"detail": exc.detail}, 403)


async def _rate_limited(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, logins.LoginRateLimited)
    headers = {"Retry-After": str(exc.retry_after_s)}
    return JSONResponse(status_code=429, content={"detail": exc.detail}, headers=headers)


def install_auth_handlers(app: FastAPI) -> None:
    """401 → the login page for browsers (JSON for the API); 403 → a page saying which role is missing;
    429 after failed logins → ``Retry-After``."""
    app.add_exception_handler(UnauthenticatedError, _unauthenticated)
    app.add_exception_handler(logins.LoginRateLimited, _rate_limited)
    app.add_exception_handler(ForbiddenError, _forbidden)
