"""The security suite's world: one hub (SQLite, the session Mosquitto) per module, with two sites A and B that
hold every kind of resource (classifier, group, camera, images, import job, history entry, training job, model
version, frame) so that every route's path parameters resolve, and callers of every role.

Callers (``World.clients``), all acting on site A unless they are hub-wide:
    anonymous            no credentials
    viewer_session       user ``viewer-a`` logged in (viewer of A)
    labeller_session     user ``labeller-a`` logged in (labeller of A)
    site_admin_session   user ``admin-a`` logged in (admin of A)
    viewer_token         a viewer token of site A (what an agent holds)
    labeller_token       a labeller token of site A (a labelling script)
    fleet_token          an every-site admin token of the hub admin (what a trainer holds)
    hub_admin_session    the hub admin logged in
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from camfleet_contract.signing import generate_signing_key
from camfleet_hub.api import create_app
from camfleet_hub.app import Hub, HubServices
from camfleet_hub.core.config import HubSettings
from tests.support.polling import unique

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub" / "api"))  # the hub tests' bundle/zip helpers

from apihelpers import bundle_zip, make_zip  # noqa: E402

API = "/api/v1"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-password-1"
PASSWORD = "correct horse 1"
ORIGIN = "http://testserver"
CSRF_HEADER = "X-CSRF-Token"  # the TestClient's own origin: same-origin requests, as a browser on the hub sends
ROLES = (  # the role matrix columns, in order
    "anonymous",
    "viewer_session",
    "labeller_session",
    "site_admin_session",
    "viewer_token",
    "labeller_token",
    "fleet_token",
    "hub_admin_session",
)
SESSION_USERS = {
    "viewer_session": ("viewer-a", "viewer"),
    "labeller_session": ("labeller-a", "labeller"),
    "site_admin_session": ("admin-a", "admin"),
}


@dataclass
class SiteWorld:
    """Ids and names of one site's resources (what the route's path parameters resolve to)."""

    site: str
    clf: str = "clf"
    group: str = "hat"
    camera: str = "cam1"
    image_id: int = 0
    sha256: str = ""
    import_job_id: int = 0
    job_id: int = 0
    model_id: int = 0
    entry_id: int = 0
    frame_id: str = ""
    member_user_id: int = 0  # a user who only views this site (target of account operations)

    def param(self, name: str) -> str:
        return str(getattr(self, name))


@dataclass
class World:
    hub: Hub
    services: HubServices
    app: Any
    admin_token: str
    admin: TestClient  # the every-site admin token: builds the sites' fixtures
    sites: dict[str, SiteWorld]
    admin_session: TestClient | None = None  # the hub admin logged in: manages accounts
    clients: dict[str, TestClient] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)

    def accounts(self) -> TestClient:
        """The hub admin's session (only a session manages accounts)."""
        if self.admin_session is None:
            self.admin_session = self.login(ADMIN_USER, ADMIN_PASSWORD)
        return self.admin_session

    def client(self, role: str) -> TestClient:
        return self.clients[role]

    def anonymous(self) -> TestClient:
        return TestClient(self.app, headers={"Origin": ORIGIN})

    def login(self, username: str, password: str = PASSWORD) -> TestClient:
        """A fresh browser-like client logged in as ``username`` (session cookie; same-origin header)."""
        client = self.anonymous()
        r = client.post(f"{API}/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, f"login of {username!r}: {r.status_code} {r.text}"
        csrf = r.headers.get(CSRF_HEADER)
        if csrf:  # API clients echo the session's CSRF token on every state-changing request
            client.headers[CSRF_HEADER] = csrf
        return client

    def rows(self, *models: Any) -> dict[str, int]:
        """Row counts of the given tables (the suite's 'nothing was written' check)."""
        with self.services.sessions() as s:
            return {m.__tablename__: int(s.scalar(select(func.count()).select_from(m)) or 0) for m in models}

    def store_files(self) -> int:
        """Objects in the hub's directory store (the 'nothing was stored' check)."""
        root = Path(self.services.settings.data_dir)
        return sum(1 for p in root.rglob("*") if p.is_file() and "blobs" in p.parts)

    def alive(self) -> None:
        """The hub still answers (after a hostile request)."""
        r = self.anonymous().get(f"{API}/health")
        assert r.status_code == 200, f"hub stopped answering: {r.status_code} {r.text[:200]}"


def hub_settings(data_dir: Path, mosquitto: Any, **over: Any) -> HubSettings:
    raw: dict[str, Any] = {
        "data_dir": str(data_dir),
        "mqtt": {"embedded": False, "host": mosquitto.host, "port": mosquitto.port, "root": unique("sec")},
        "db": {"url": f"sqlite:///{data_dir / 'hub.db'}"},
        "ingest": {"enabled": False},
        "auth": {"admin_username": ADMIN_USER, "admin_password": ADMIN_PASSWORD},
    }
    for key, value in over.items():
        raw[key] = {**raw.get(key, {}), **value}
    return HubSettings.model_validate(raw)


def _every_site_admin_token(services: HubServices) -> str:
    from camfleet_hub.auth import callers, tokens, users
    from camfleet_hub.auth.models import Role

    with services.sessions() as session:
        admin = users.get_user_by_name(session, ADMIN_USER)
        _row, secret = tokens.create_token(session, callers.caller_of_user(session, admin), "trainer", None, Role.ADMIN)
    return secret


def _site_token(services: HubServices, username: str, site: str, role: str) -> str:
    """A site token made for ``username`` through the service (as a logged-in user would make it)."""
    from camfleet_hub.auth import callers, tokens, users
    from camfleet_hub.auth.models import Role
    from camfleet_hub.datasets import crud

    with services.sessions() as session:
        user = users.get_user_by_name(session, username)
        caller = callers.caller_of_user(session, user)
        _row, secret = tokens.create_token(session, caller, unique("tok-"), crud.get_site(session, site), Role(role))
    return secret


def _ok(r: Any, what: str) -> Any:
    assert r.status_code < 300, f"{what}: {r.status_code} {r.text[:500]}"
    return r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else None


def _build_site(w: World, name: str, data: Path, trainer_key: str, tmp: Path) -> SiteWorld:
    from camfleet_hub.datasets.models import Camera, Frame, Image, Site

    sw = SiteWorld(site=name)
    c = w.admin
    base = f"{API}/sites/{name}"
    _ok(c.post(f"{API}/sites", json={"name": name}), "create site")
    _ok(c.post(f"{base}/classifiers", json={"name": sw.clf}), "create classifier")
    _ok(c.post(f"{base}/cameras", json={"name": sw.camera}), "create camera")
    clf = f"{base}/classifiers/{sw.clf}"
    # Different images per site: a blob shared by both would be visible through either.
    offset = 0 if name.endswith("a") else 2
    zipped = make_zip(
        (f"{cls}/{p.name}", p.read_bytes())
        for cls in ("dress", "hat")
        for p in sorted((data / "train" / cls).glob("*.jpg"))[offset : offset + 2]
    )
    job = _ok(c.post(f"{clf}/import?wait=true", files={"file": ("d.zip", zipped, "application/zip")}), "import")
    sw.import_job_id = int(job["id"])
    images = _ok(c.get(f"{clf}/images"), "list images")
    sw.image_id, sw.sha256 = int(images[0]["id"]), str(images[0]["sha256"])
    moved = _ok(
        c.post(f"{clf}/images/bulk", json={"ids": [images[-1]["id"]], "action": "move", "group": "hat"}), "bulk"
    )
    sw.entry_id = int(moved["id"])
    sw.job_id = int(_ok(c.post(f"{clf}/jobs", json={}), "create job")["id"])
    claimed = _ok(c.post(f"{API}/jobs/claim", json={"worker": "sec-trainer"}), "claim")
    assert claimed["job"]["id"] == sw.job_id
    bundle = bundle_zip(tmp, trainer_key, classes=["dress", "hat"], classifier=sw.clf)
    model = c.post(f"{API}/jobs/{sw.job_id}/result", files={"file": ("bundle.zip", bundle, "application/zip")})
    sw.model_id = int(_ok(model, "upload model")["id"])
    with w.services.sessions() as s:
        site = s.scalar(select(Site).where(Site.name == name))
        camera = s.scalar(select(Camera).where(Camera.site_id == site.id))
        image = s.get(Image, sw.image_id)
        sw.frame_id = unique("frame-")
        s.add(
            Frame(
                frame_id=sw.frame_id,
                site_id=site.id,
                camera_id=camera.id,
                agent="agent-1",
                captured_at=datetime.now(UTC),
                sha256=image.sha256,
                width=64,
                height=64,
            )
        )
        s.commit()
    member = unique(f"member-{name}-")
    accounts = w.accounts()
    uid = int(_ok(accounts.post(f"{API}/users", json={"username": member, "password": PASSWORD}), "member")["id"])
    _ok(accounts.put(f"{API}/users/{uid}/roles/{name}", json={"role": "viewer"}), "member role")
    sw.member_user_id = uid
    return sw


def build_world(tmp: Path, mosquitto: Any, data: Path, **settings: Any) -> World:
    """A started hub with sites ``site-a`` and ``site-b`` and a client per role (see the module docstring)."""
    hub = Hub(hub_settings(tmp / "hub", mosquitto, **settings), http=False, ingest=False, broker=False)
    services = hub.start()
    assert services.mqtt.wait_connected(30), "hub MQTT client did not connect to mosquitto"
    token = _every_site_admin_token(services)
    app = create_app(services)
    admin = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    admin.__enter__()
    w = World(hub=hub, services=services, app=app, admin_token=token, admin=admin, sites={})
    trainer_key = generate_signing_key()
    for key in ("a", "b"):
        w.sites[key] = _build_site(w, f"site-{key}", data, trainer_key, tmp)
    for sw in w.sites.values():  # a queued job per site (after every claim): the one the job routes act on
        r = admin.post(f"{API}/sites/{sw.site}/classifiers/{sw.clf}/jobs", json={})
        sw.job_id = int(_ok(r, "create job")["id"])
    for role, (username, site_role) in SESSION_USERS.items():
        r = w.accounts().post(f"{API}/users", json={"username": username, "password": PASSWORD})
        w.user_ids[role] = int(_ok(r, f"user {username}")["id"])
        _ok(w.accounts().put(f"{API}/users/{w.user_ids[role]}/roles/site-a", json={"role": site_role}), "role")
    w.clients["anonymous"] = w.anonymous()
    for role, (username, _site_role) in SESSION_USERS.items():
        w.clients[role] = w.login(username)
    w.clients["hub_admin_session"] = w.login(ADMIN_USER, ADMIN_PASSWORD)
    for role, site_role in (("viewer_token", "viewer"), ("labeller_token", "labeller")):
        secret = _site_token(services, "labeller-a", "site-a", site_role)
        w.clients[role] = TestClient(app, headers={"Authorization": f"Bearer {secret}"})
    w.clients["fleet_token"] = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    return w


@contextmanager
def running_world(tmp: Path, mosquitto: Any, data: Path, promote: bool = False, **settings: Any) -> Iterator[World]:
    """``build_world``, stopped afterwards; with ``promote``, site A's model is production (so /classify reaches
    the model)."""
    w = build_world(tmp, mosquitto, data, **settings)
    try:
        if promote:
            assert w.admin.post(f"{API}/models/{w.sites['a'].model_id}/promote").status_code == 200
        yield w
    finally:
        w.admin.__exit__(None, None, None)
        w.hub.stop()


def victim_token(w: World, site: str) -> int:
    """A viewer token of ``site`` owned by the hub admin (to be revoked by the test); returns its id."""
    from camfleet_hub.auth import callers, tokens, users
    from camfleet_hub.auth.models import Role
    from camfleet_hub.datasets import crud

    with w.services.sessions() as session:
        admin = users.get_user_by_name(session, ADMIN_USER)
        caller = callers.caller_of_user(session, admin)
        row, _secret = tokens.create_token(
            session, caller, unique("victim-"), crud.get_site(session, site), Role.VIEWER
        )
        return int(row.id)


def victim_user(w: World, site: str) -> int:
    """A user who views ``site`` (to be deleted by the test); returns its id."""
    r = w.accounts().post(f"{API}/users", json={"username": unique("victim-"), "password": PASSWORD})
    uid = int(_ok(r, "victim user")["id"])
    _ok(w.accounts().put(f"{API}/users/{uid}/roles/{site}", json={"role": "viewer"}), "victim role")
    return uid


def victim_group(w: World, site: str, clf: str) -> str:
    name = unique("victim-")
    _ok(w.admin.post(f"{API}/sites/{site}/classifiers/{clf}/groups", json={"name": name}), "victim group")
    return name


def victim_mqtt_account(w: World, site: str) -> int:
    """MQTT credentials of an observer of ``site`` (to be revoked by the test); returns the account id."""
    r = w.accounts().post(f"{API}/sites/{site}/mqtt-accounts", json={"kind": "observer", "name": unique("obs-")})
    return int(_ok(r, "victim mqtt account")["id"])
