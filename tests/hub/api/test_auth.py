"""Users and access: scrypt hashes, login (cookie, rate limit), tokens (scope, revocation, owner's rights),
site roles on the REST API and the web pages, the first admin and the CLI. SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from camfleet_hub.app import Hub
from camfleet_hub.auth.models import ApiToken, LoginSession, User
from camfleet_hub.auth.passwords import hash_password, verify_password
from camfleet_hub.core.config import HubSettings
from camfleet_hub.datasets.models import Blob, Image, ImageSource

API = "/api/v1"
PASSWORD = "correct horse 1"


# --------------------------------------------------------------------------- helpers


def anonymous(api: Any) -> TestClient:
    """A client of the same app with no credentials."""
    return TestClient(api.client.app)


def make_user(api: Any, name: str, roles: dict[str, str] | None = None, admin: bool = False) -> int:
    """Users are made from the first admin's session (account routes refuse tokens)."""
    hub_admin = admin_session(api)
    r = hub_admin.post(f"{API}/users", json={"username": name, "password": PASSWORD, "is_admin": admin})
    assert r.status_code == 201, r.text
    uid = int(r.json()["id"])
    for site, role in (roles or {}).items():
        assert hub_admin.put(f"{API}/users/{uid}/roles/{site}", json={"role": role}).status_code == 200
    return uid


def logged_in(api: Any, name: str, password: str = PASSWORD) -> TestClient:
    """A session client that sends the CSRF token the login answered, as API clients must."""
    client = anonymous(api)
    r = client.post(f"{API}/auth/login", json={"username": name, "password": password})
    assert r.status_code == 200, r.text
    client.headers["X-CSRF-Token"] = r.headers["x-csrf-token"]
    return client


def admin_session(api: Any) -> TestClient:
    return logged_in(api, "admin", "admin-password-1")


def bearer(api: Any, secret: str) -> TestClient:
    return TestClient(api.client.app, headers={"Authorization": f"Bearer {secret}"})


def page_csrf(html: str) -> str:
    """The session's CSRF token as a page hands it to its scripts."""
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert found, "the page has no csrf-token meta tag"
    return found.group(1)


def form_csrf(html: str) -> str:
    found = re.search(r'<input type="hidden" name="csrf_token" value="([^"]+)">', html)
    assert found, "the page's forms carry no csrf_token"
    return found.group(1)


def setup_sites(api: Any, *names: str) -> dict[str, int]:
    """Sites with a classifier ``clf`` (group ``a``) and one NEW image each; returns site → image id."""
    images = {}
    for site in names:
        assert api.client.post(f"{API}/sites", json={"name": site}).status_code == 201
        assert api.client.post(f"{API}/sites/{site}/classifiers", json={"name": "clf"}).status_code == 201
        assert api.client.post(f"{API}/sites/{site}/classifiers/clf/groups", json={"name": "a"}).status_code == 201
        clf_id = api.client.get(f"{API}/sites/{site}/classifiers/clf").json()["id"]
        sha = hashlib.sha256(site.encode()).hexdigest()
        with api.services.sessions() as s:
            s.add(Blob(sha256=sha, size=1, width=1, height=1, format="JPEG"))
            s.flush()
            image = Image(classifier_id=clf_id, sha256=sha, source=ImageSource.UPLOAD.value)
            s.add(image)
            s.commit()
            images[site] = image.id
    return images


# --------------------------------------------------------------------------- KDF


def test_kdf_format_and_verify() -> None:
    stored = hash_password("s3cret-pass")
    kind, n, r, p, salt, digest = stored.split("$")
    assert (kind, int(n), int(r), int(p)) == ("scrypt", 2**14, 8, 1)
    assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(digest)) == 32
    expected = hashlib.scrypt(b"s3cret-pass", salt=bytes.fromhex(salt), n=2**14, r=8, p=1, dklen=32)
    assert expected.hex() == digest
    assert verify_password("s3cret-pass", stored)
    assert not verify_password("s3cret-pasS", stored)
    assert hash_password("s3cret-pass") != stored  # a fresh salt each time
    for broken in ("", "plain", "bcrypt$1$2$3$00$00", stored.replace("$16384$", "$99999999$"), "scrypt$x$8$1$00$00"):
        assert not verify_password("s3cret-pass", broken)


# --------------------------------------------------------------------------- login


def test_login_cookie_me_and_logout(api) -> None:
    client = anonymous(api)
    assert client.get(f"{API}/auth/me").status_code == 401
    wrong = client.post(f"{API}/auth/login", json={"username": "admin", "password": "not-it-at-all"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong username or password"
    unknown = client.post(f"{API}/auth/login", json={"username": "nobody", "password": "whatever1"})
    assert unknown.status_code == 401 and unknown.json()["detail"] == wrong.json()["detail"]

    r = client.post(f"{API}/auth/login", json={"username": "admin", "password": "admin-password-1"})
    assert r.status_code == 200 and r.json()["is_admin"] is True
    cookie = r.headers["set-cookie"]
    assert "camfleet_session=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert "Secure" not in cookie  # auth.secure_cookies is off in tests
    me = client.get(f"{API}/auth/me").json()
    assert me["name"] == "admin" and me["is_admin"] is True
    with api.services.sessions() as s:
        stored = s.scalars(select(LoginSession.token_sha256)).all()
    secret = client.cookies.get("camfleet_session")
    assert secret is not None and hashlib.sha256(secret.encode()).hexdigest() in stored  # only the hash is kept

    assert client.post(f"{API}/auth/logout").status_code == 403  # no CSRF token: not even a forced logout
    assert client.post(f"{API}/auth/logout", headers={"X-CSRF-Token": r.headers["x-csrf-token"]}).status_code == 204
    client.cookies.set("camfleet_session", secret)  # replaying the old cookie does not work either
    assert client.get(f"{API}/auth/me").status_code == 401


def test_login_rate_limit_per_username_and_address(sqlite_api) -> None:
    api = sqlite_api
    attempts = api.services.settings.auth.login_attempts
    make_user(api, "bob")  # (made first: the admin is locked out below)
    client = anonymous(api)
    for _ in range(attempts):
        r = client.post(f"{API}/auth/login", json={"username": "admin", "password": "bad-guess-1"})
        assert r.status_code == 401
    blocked = client.post(f"{API}/auth/login", json={"username": "admin", "password": "admin-password-1"})
    assert blocked.status_code == 429
    assert "try again in" in blocked.json()["detail"] and "admin" in blocked.json()["detail"]
    wait = int(blocked.headers["retry-after"])
    assert 0 < wait <= api.services.settings.auth.login_window_s
    page = client.post("/login", data={"username": "admin", "password": "admin-password-1"})
    assert page.status_code == 429 and "too many failed logins" in page.text and "retry-after" in page.headers
    # another username from the same address is not blocked (below the per-address limit)
    assert client.post(f"{API}/auth/login", json={"username": "bob", "password": PASSWORD}).status_code == 200


def test_unauthenticated_api_is_401_and_pages_redirect_to_login(sqlite_api) -> None:
    client = anonymous(sqlite_api)
    assert client.get(f"{API}/health").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    for path in (f"{API}/sites", f"{API}/frames", f"{API}/keys/fleet", f"{API}/jobs/1", f"{API}/users"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
    assert client.post(f"{API}/jobs/claim", json={"worker": "w"}).status_code == 401
    bad = client.get(f"{API}/sites", headers={"Authorization": "Basic abc"})
    assert bad.status_code == 401 and "Bearer" in bad.json()["detail"]
    page = client.get("/ui/users?tab=1", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/ui/users%3Ftab%3D1"
    assert client.get("/", follow_redirects=False).headers["location"] == "/login?next=/"


# --------------------------------------------------------------------------- roles


def test_roles_on_the_api(api) -> None:
    images = setup_sites(api, "alpha", "beta")
    make_user(api, "viv", {"alpha": "viewer"})
    make_user(api, "lab", {"alpha": "labeller"})
    viewer, labeller = logged_in(api, "viv"), logged_in(api, "lab")

    # viewers read their site only
    assert viewer.get(f"{API}/sites/alpha/classifiers/clf/images").status_code == 200
    assert [s["name"] for s in viewer.get(f"{API}/sites").json()] == ["alpha"]
    r = viewer.get(f"{API}/sites/beta/classifiers")
    assert r.status_code == 403 and "viewer role in site 'beta'" in r.json()["detail"]
    # … and cannot edit
    r = viewer.patch(f"{API}/images/{images['alpha']}", json={"group": "a"})
    assert r.status_code == 403 and "labeller" in r.json()["detail"]
    assert viewer.post(f"{API}/sites/alpha/classifiers/clf/groups", json={"name": "b"}).status_code == 403

    # labellers curate in their site …
    r = labeller.patch(f"{API}/images/{images['alpha']}", json={"group": "a", "status": "GROUP"})
    assert r.status_code == 200 and r.json()["status"] == "GROUP"
    assert labeller.post(f"{API}/sites/alpha/classifiers/clf/groups", json={"name": "b"}).status_code == 201
    # … not on another site's image, by id
    r = labeller.patch(f"{API}/images/{images['beta']}", json={"group": "a"})
    assert r.status_code == 403 and "'beta'" in r.json()["detail"]
    assert labeller.get(f"{API}/images/{images['beta']}/thumbnail").status_code == 403
    # … and manage neither users nor sites nor site settings
    assert labeller.post(f"{API}/users", json={"username": "eve", "password": PASSWORD}).status_code == 403
    assert labeller.get(f"{API}/users").status_code == 403
    assert labeller.put(f"{API}/users/1/roles/alpha", json={"role": "admin"}).status_code == 403
    assert labeller.post(f"{API}/sites", json={"name": "gamma"}).status_code == 403
    assert labeller.post(f"{API}/sites/alpha/classifiers", json={"name": "other"}).status_code == 403
    assert labeller.get(f"{API}/ingest/stats").status_code == 403
    assert labeller.get(f"{API}/frames").status_code == 403  # must name a site it can read
    assert labeller.get(f"{API}/frames", params={"site": "alpha"}).status_code == 200
    # trainer routes are for every-site admin tokens
    assert labeller.post(f"{API}/jobs/claim", json={"worker": "w"}).status_code == 403


def test_site_admin_grants_roles_in_own_site_only(sqlite_api) -> None:
    api = sqlite_api
    setup_sites(api, "alpha", "beta")
    make_user(api, "boss", {"alpha": "admin"})
    carl = make_user(api, "carl")
    boss = logged_in(api, "boss")
    assert boss.put(f"{API}/users/{carl}/roles/alpha", json={"role": "labeller"}).status_code == 200
    assert boss.put(f"{API}/users/{carl}/roles/beta", json={"role": "viewer"}).status_code == 403
    listed = {u["username"]: u for u in boss.get(f"{API}/users").json()}
    assert listed["carl"]["roles"] == {"alpha": "labeller"}
    assert boss.patch(f"{API}/users/{carl}", json={"is_admin": True}).status_code == 403
    assert boss.post(f"{API}/users", json={"username": "dan", "password": PASSWORD}).status_code == 403
    assert boss.put(f"{API}/users/{carl}/roles/alpha", json={"role": None}).status_code == 200
    assert logged_in(api, "carl").get(f"{API}/sites/alpha").status_code == 403


def test_users_crud_and_last_admin(sqlite_api) -> None:
    api = sqlite_api
    uid = make_user(api, "temp")
    hub_admin = admin_session(api)
    assert hub_admin.post(f"{API}/users", json={"username": "temp", "password": PASSWORD}).status_code == 409
    r = hub_admin.post(f"{API}/users", json={"username": "bad name", "password": PASSWORD})
    assert r.status_code == 422 and "username" in r.json()["detail"]
    assert hub_admin.post(f"{API}/users", json={"username": "short", "password": "1234"}).status_code == 422
    temp, other = logged_in(api, "temp"), logged_in(api, "temp")
    change = {"password": "another pass 2", "current_password": PASSWORD}
    assert temp.patch(f"{API}/users/{uid}", json=change).status_code == 200  # own password
    assert other.get(f"{API}/auth/me").status_code == 401  # a password change ends the other sessions
    logged_in(api, "temp", "another pass 2")
    hub_admin = admin_session(api)
    assert hub_admin.patch(f"{API}/users/{uid}", json={"disabled": True}).json()["disabled"] is True
    r = anonymous(api).post(f"{API}/auth/login", json={"username": "temp", "password": "another pass 2"})
    assert r.status_code == 401 and "disabled" in r.json()["detail"]
    admin_id = next(u["id"] for u in hub_admin.get(f"{API}/users").json() if u["username"] == "admin")
    r = hub_admin.patch(f"{API}/users/{admin_id}", json={"disabled": True})
    assert r.status_code == 409 and "last active hub administrator" in r.json()["detail"]
    assert hub_admin.delete(f"{API}/users/{admin_id}").status_code == 409
    assert hub_admin.delete(f"{API}/users/{uid}").status_code == 204
    assert hub_admin.delete(f"{API}/users/{uid}").status_code == 404


# --------------------------------------------------------------------------- tokens


def test_token_scope_revocation_and_owner_rights(api) -> None:
    images = setup_sites(api, "alpha", "beta")
    lab_id = make_user(api, "lab", {"alpha": "labeller"})
    lab = logged_in(api, "lab")

    r = lab.post(f"{API}/tokens", json={"name": "script", "site": "alpha", "role": "labeller"})
    assert r.status_code == 201
    created = r.json()
    secret = created["token"]
    assert created["site"] == "alpha" and created["owner"] == "lab"
    with api.services.sessions() as s:
        row = s.get(ApiToken, created["id"])
        assert row is not None and row.token_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert all("token" not in t for t in lab.get(f"{API}/tokens").json())  # the secret is never listed

    script = bearer(api, secret)
    assert script.get(f"{API}/sites/alpha/classifiers/clf/images").status_code == 200
    assert script.get(f"{API}/sites/beta/classifiers/clf/images").status_code == 403  # site A token, site B
    assert script.patch(f"{API}/images/{images['alpha']}", json={"group": "a"}).status_code == 200
    assert script.patch(f"{API}/images/{images['beta']}", json={"group": "a"}).status_code == 403
    used = [t for t in lab.get(f"{API}/tokens").json() if t["id"] == created["id"]][0]
    assert used["last_used_at"] is not None

    # no more than the owner holds: no admin token for alpha, no every-site token
    assert lab.post(f"{API}/tokens", json={"name": "x", "site": "alpha", "role": "admin"}).status_code == 403
    assert lab.post(f"{API}/tokens", json={"name": "x", "site": None, "role": "viewer"}).status_code == 403
    # the owner demoted to viewer: the labeller token can only read now
    assert admin_session(api).put(f"{API}/users/{lab_id}/roles/alpha", json={"role": "viewer"}).status_code == 200
    assert script.patch(f"{API}/images/{images['alpha']}", json={"group": "a"}).status_code == 403
    assert script.get(f"{API}/sites/alpha/classifiers").status_code == 200

    assert lab.delete(f"{API}/tokens/{created['id']}").json()["revoked_at"] is not None
    r = script.get(f"{API}/sites/alpha/classifiers")
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_trainer_needs_an_every_site_admin_token(sqlite_api) -> None:
    api = sqlite_api
    setup_sites(api, "alpha")
    hub_admin = admin_session(api)
    site_admin = hub_admin.post(f"{API}/tokens", json={"name": "t1", "site": "alpha", "role": "admin"}).json()
    assert bearer(api, site_admin["token"]).post(f"{API}/jobs/claim", json={"worker": "w"}).status_code == 403
    every_viewer = hub_admin.post(f"{API}/tokens", json={"name": "t2", "site": None, "role": "viewer"}).json()
    reader = bearer(api, every_viewer["token"])
    assert reader.get(f"{API}/sites/alpha/classifiers").status_code == 200  # every site, read only
    assert reader.post(f"{API}/sites/alpha/classifiers/clf/groups", json={"name": "z"}).status_code == 403
    assert reader.post(f"{API}/jobs/claim", json={"worker": "w"}).status_code == 403
    trainer = hub_admin.post(f"{API}/tokens", json={"name": "trainer", "site": None, "role": "admin"}).json()
    assert bearer(api, trainer["token"]).post(f"{API}/jobs/claim", json={"worker": "w"}).status_code == 204
    me = bearer(api, every_viewer["token"]).get(f"{API}/auth/me").json()
    assert me == {"name": "token:t2", "user_id": me["user_id"], "is_admin": False, "roles": {}, "every_site": "viewer"}


# --------------------------------------------------------------------------- pages


def test_pages_follow_the_roles(sqlite_api) -> None:
    api = sqlite_api
    images = setup_sites(api, "alpha", "beta")
    make_user(api, "viv", {"alpha": "viewer"})
    viewer = anonymous(api)
    r = viewer.post("/login", data={"username": "viv", "password": "nope-nope", "next": "/"}, follow_redirects=False)
    assert r.status_code == 401 and "wrong username or password" in r.text
    r = viewer.post("/login", data={"username": "viv", "password": PASSWORD, "next": "//evil.example/"})
    assert r.status_code == 200 and str(r.url).endswith("/")  # an off-site next falls back to the overview
    assert "Site alpha" in r.text and "Site beta" not in r.text
    assert 'id="nav-user" title="Users &amp; tokens">viv<' in r.text
    viewer.headers["X-CSRF-Token"] = form_csrf(r.text)  # the token the page hands its forms and scripts
    page = viewer.get("/ui/sites/beta/classifiers/clf/training")
    assert page.status_code == 403 and "viewer role in site &#39;beta&#39;" in page.text
    moved = viewer.post(f"/ui/images/{images['alpha']}/group", data={"group": "a"}, follow_redirects=False)
    assert moved.status_code == 403
    users = viewer.get("/ui/users")
    assert users.status_code == 200 and 'id="users"' not in users.text  # no user list for a viewer
    r = viewer.post("/ui/tokens", data={"name": "mine", "site": "alpha", "role": "viewer"})
    assert r.status_code == 201 and 'id="token-secret"' in r.text
    r = viewer.post("/ui/tokens", data={"name": "mine", "site": "alpha", "role": "labeller"})
    assert r.status_code == 403 and "needs the labeller role" in r.text
    assert viewer.post("/logout", follow_redirects=False).headers["location"] == "/login"
    assert viewer.get("/", follow_redirects=False).status_code == 303


def test_admin_page_creates_users_and_grants_roles(sqlite_api) -> None:
    api = sqlite_api
    setup_sites(api, "alpha")
    admin = anonymous(api)
    page = admin.post("/login", data={"username": "admin", "password": "admin-password-1", "next": "/ui/users"})
    token = form_csrf(page.text)  # the hidden csrf_token field of the page's forms
    r = admin.post("/ui/users", data={"username": "newbie", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 200 and 'data-user="newbie"' in r.text
    uid = next(u["id"] for u in admin_session(api).get(f"{API}/users").json() if u["username"] == "newbie")
    grant = {"site": "alpha", "role": "labeller", "csrf_token": token}
    assert admin.post(f"/ui/users/{uid}/role", data=grant).status_code == 200
    assert logged_in(api, "newbie").get(f"{API}/auth/me").json()["roles"] == {"alpha": "labeller"}
    r = admin.post("/ui/users", data={"username": "newbie", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 409 and "already exists" in r.text


# --------------------------------------------------------------------------- first admin, CLI


def _offline_hub(tmp_path: Path, **auth: Any) -> Hub:
    settings = HubSettings.model_validate(
        {"data_dir": str(tmp_path / "hub"), "mqtt": {"embedded": False}, "auth": auth}
    )
    return Hub(settings, http=False, ingest=False, broker=False, publisher=False)


def test_first_admin_is_printed_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = _offline_hub(tmp_path)
    services = hub.start()
    hub.stop()
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("first admin: ")]
    assert len(lines) == 1, out
    password = lines[0].split(" / ")[1].split(" - ")[0]
    assert "change it" in lines[0]
    with services.sessions() as s:
        admin = s.scalar(select(User).where(User.username == "admin"))
        assert admin is not None and admin.is_admin and verify_password(password, admin.password_hash)
    services.engine.dispose()
    again = _offline_hub(tmp_path)
    again.start()  # second start: the user exists, nothing is printed
    again.stop()
    assert "first admin" not in capsys.readouterr().out


def test_admin_password_from_config_is_not_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = _offline_hub(tmp_path, admin_username="root", admin_password="from-config-1")
    services = hub.start()
    hub.stop()
    assert "from-config-1" not in capsys.readouterr().out
    with services.sessions() as s:
        root = s.scalar(select(User).where(User.username == "root"))
        assert root is not None and verify_password("from-config-1", root.password_hash)


def test_cli_user_and_token(sqlite_api, tmp_path: Path) -> None:
    api = sqlite_api
    setup_sites(api, "alpha")
    cfg = tmp_path / "hub.toml"
    cfg.write_text(f'data_dir = "{api.services.settings.data_dir}"\n[db]\nurl = "{api.services.settings.db_url()}"\n')

    def cli(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "camfleet_hub", *argv[:2], "--config", str(cfg), *argv[2:]]
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)

    r = cli("user", "create", "cli-user", "--role", "alpha=viewer", "--password-stdin", stdin="cli password 1\n")
    assert r.returncode == 0, r.stderr
    assert logged_in(api, "cli-user", "cli password 1").get(f"{API}/sites/alpha").status_code == 200
    r = cli("user", "passwd", "cli-user", "--password-stdin", stdin="cli password 2\n")
    assert r.returncode == 0, r.stderr
    logged_in(api, "cli-user", "cli password 2")
    r = cli("token", "create", "--site", "alpha", "--role", "viewer", "--name", "agent1")
    assert r.returncode == 0, r.stderr
    agent = bearer(api, r.stdout.strip())
    assert agent.get(f"{API}/sites/alpha/classifiers").status_code == 200
    assert agent.post(f"{API}/sites/alpha/classifiers/clf/groups", json={"name": "q"}).status_code == 403
    r = cli("token", "create", "--site", "nowhere", "--name", "x")
    assert r.returncode == 1 and "site='nowhere' not found" in r.stderr


# Health and the probes answer anyone (a load balancer has no token); login and logout need no session.
PUBLIC = {
    ("get", f"{API}/health"),
    ("get", f"{API}/healthz"),
    ("get", f"{API}/readyz"),
    ("post", f"{API}/auth/login"),
    ("post", f"{API}/auth/logout"),
}


def test_every_api_route_needs_credentials(sqlite_api) -> None:
    """Each operation in the OpenAPI document (other helpers' routes included) answers 401 without credentials."""
    client = anonymous(sqlite_api)
    spec = client.get("/openapi.json").json()
    checked = 0
    for path, operations in spec["paths"].items():
        for method in operations:
            if (method, path) in PUBLIC:
                continue
            r = client.request(method.upper(), re.sub(r"\{[^}]+\}", "1", path))
            assert r.status_code == 401, f"{method.upper()} {path} answered {r.status_code} without credentials"
            checked += 1
    assert checked > 40


def test_trainer_client_sends_its_token(sqlite_api, free_port) -> None:  # type: ignore[no-untyped-def]
    """The trainer's HubClient with its configured token: claims with an every-site admin token, clear 401/403."""
    import threading
    import time

    import uvicorn

    from camfleet_trainer.client import HubClient, HubError

    api = sqlite_api
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api.client.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        hub_admin = admin_session(api)
        admin = hub_admin.post(f"{API}/tokens", json={"name": "trainer", "role": "admin"}).json()["token"]
        viewer = hub_admin.post(f"{API}/tokens", json={"name": "peek", "role": "viewer"}).json()["token"]
        with HubClient(url, token=admin, retries=0) as client:
            assert client.claim("w1", gpu=False) is None  # 204: authorised, nothing waiting
        for token, status in ((viewer, 403), (None, 401)):
            with HubClient(url, token=token, retries=0) as client, pytest.raises(HubError) as err:
                client.claim("w1", gpu=False)
            assert err.value.status == status and "every-site admin token" in str(err.value)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
