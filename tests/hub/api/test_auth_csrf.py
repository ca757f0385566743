"""Issue 10 hole 5a and the header item: CSRF refusals for cookie requests (API and forms), security headers,
and no inline script the CSP would block."""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_auth import API, PASSWORD, anonymous, bearer, form_csrf, logged_in, make_user, page_csrf, setup_sites  # noqa: E402,I001


def _admin_cookie_client(api):  # type: ignore[no-untyped-def]
    """The admin's browser: a session cookie and nothing else (no CSRF header of its own)."""
    client = anonymous(api)
    r = client.post(f"{API}/auth/login", json={"username": "admin", "password": "admin-password-1"})
    assert r.status_code == 200
    return client, r.headers["x-csrf-token"]


def _user_count(api) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from camfleet_hub.auth.models import ApiToken, User

    with api.services.sessions() as s:
        return int(s.scalar(select(func.count(User.id))) or 0) + int(s.scalar(select(func.count(ApiToken.id))) or 0)


EVIL = "https://evil.example"


@pytest.mark.parametrize(
    ("headers", "token", "why"),
    [
        ({}, False, "missing CSRF token"),
        ({"X-CSRF-Token": "cf_not-the-token"}, False, "does not match"),
        ({"Origin": EVIL}, True, "Origin"),
        ({"Sec-Fetch-Site": "cross-site"}, True, "Sec-Fetch-Site: cross-site"),
        ({"Sec-Fetch-Site": "same-site"}, True, "Sec-Fetch-Site: same-site"),
        ({"Origin": "null"}, True, "Origin"),
    ],
)
def test_cross_origin_api_posts_with_the_admins_cookie_are_refused(sqlite_api, headers, token, why) -> None:  # type: ignore[no-untyped-def]
    """The reviewed attack: a page elsewhere POSTs with the admin's cookie to create a hub admin and a token."""
    api = sqlite_api
    client, csrf = _admin_cookie_client(api)
    sent = {**headers, **({"X-CSRF-Token": csrf} if token else {})}
    before = _user_count(api)
    for path, body in (
        ("/users", {"username": "mallory", "password": PASSWORD, "is_admin": True}),
        ("/tokens", {"name": "stolen", "site": None, "role": "admin"}),
    ):
        r = client.post(f"{API}{path}", json=body, headers=sent)
        assert r.status_code == 403 and why in r.json()["detail"], r.text
    assert _user_count(api) == before  # nothing was created
    assert client.get(f"{API}/auth/me").status_code == 200  # the hub still answers; reads need no token


def test_cross_origin_form_posts_are_refused(sqlite_api) -> None:
    api = sqlite_api
    setup_sites(api, "alpha")
    client, _csrf = _admin_cookie_client(api)
    form = {"username": "mallory", "password": PASSWORD, "is_admin": "1"}
    assert client.post("/ui/users", data=form).status_code == 403  # no csrf_token field
    assert client.post("/ui/users", data={**form, "csrf_token": "forged"}).status_code == 403
    page = client.get("/ui/users").text
    token = form_csrf(page)
    refused = client.post("/ui/users", data={**form, "csrf_token": token}, headers={"Origin": EVIL})
    assert refused.status_code == 403 and "is not this hub" in refused.text
    assert "mallory" not in client.get("/ui/users").text
    # the same form from the hub's own page (its token, same origin) works
    own = client.post("/ui/users", data={**form, "csrf_token": token}, headers={"Origin": "http://testserver"})
    assert own.status_code == 200 and 'data-user="mallory"' in own.text
    assert page_csrf(page) == token  # the page hands its scripts the same token as its forms


def test_same_origin_cookie_requests_with_the_token_and_bearer_requests_pass(sqlite_api) -> None:
    api = sqlite_api
    client, csrf = _admin_cookie_client(api)
    same = {"X-CSRF-Token": csrf, "Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    assert client.post(f"{API}/sites", json={"name": "alpha"}, headers=same).status_code == 201
    # a bearer token is not sent by a browser on its own: no CSRF token needed, even with a stray cookie
    assert bearer(api, api.admin_token).post(f"{API}/sites", json={"name": "beta"}).status_code == 201
    # /auth/me hands the token again to a session (a script that reloaded)
    assert client.get(f"{API}/auth/me").headers["x-csrf-token"] == csrf
    # a new login means a new token: the old one no longer matches
    make_user(api, "lee")
    lee = logged_in(api, "lee")
    assert lee.headers["X-CSRF-Token"] != csrf


def test_login_itself_is_not_blocked_by_a_stale_cookie_but_cross_site_login_is(sqlite_api) -> None:
    client = anonymous(sqlite_api)
    client.cookies.set("camfleet_session", "cf_expired-or-forged")
    ok = client.post(f"{API}/auth/login", json={"username": "admin", "password": "admin-password-1"})
    assert ok.status_code == 200
    forced = anonymous(sqlite_api).post(
        "/login", data={"username": "admin", "password": "admin-password-1"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert forced.status_code == 403 and "camfleet_session" not in forced.headers.get("set-cookie", "")


@pytest.mark.parametrize("path", ["/", "/login", "/ui/users", f"{API}/health", "/static/style.css", f"{API}/sites"])
def test_security_headers_on_every_response(sqlite_api, path: str) -> None:
    client, _ = _admin_cookie_client(sqlite_api)
    r = client.get(path)
    assert r.status_code in (200, 401), (path, r.status_code)
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    script_src = re.search(r"script-src ([^;]+)", csp)
    assert script_src and "'unsafe-inline'" not in script_src.group(1)
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"
    if path == "/":  # the overview's one inline script carries this response's nonce
        nonce = re.search(r"'nonce-([^']+)'", csp)
        assert nonce and f'<script nonce="{nonce.group(1)}">' in r.text


def test_refusals_carry_the_headers_too(sqlite_api) -> None:
    client, _ = _admin_cookie_client(sqlite_api)
    r = client.post(f"{API}/sites", json={"name": "x"})
    assert r.status_code == 403 and r.headers["x-frame-options"] == "DENY"


def test_templates_have_no_script_the_csp_would_block() -> None:
    """Every <script> is a file of the hub's own or carries the nonce; no inline event handlers; every POST form
    carries the CSRF field (the login form needs none)."""
    folder = resources.files("camfleet_hub.web") / "templates"
    checked = 0
    for item in folder.iterdir():
        if not item.name.endswith(".html"):
            continue
        text = item.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag or "nonce=" in tag, (item.name, tag)
        assert not re.search(r"\son[a-z]+\s*=", text), f"{item.name}: inline event handler"
        assert "javascript:" not in text, item.name
        for form in re.findall(r'<form method="post"[^>]*>.{0,20}', text, flags=re.S):
            if item.name != "login.html":
                assert "{{ csrf_field() }}" in form, (item.name, form)
            checked += 1
    assert checked > 20
