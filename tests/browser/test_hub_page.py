"""The hub's page in a real browser (Debian's Chromium via Playwright) against a real hub process:
a person sees the dataset and a freshly trained candidate, presses Promote, and the fleet follows."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest

from camfleet_contract.signing import generate_signing_key
from tests.support.tinybundle import make_bundle_zip

SITE, CLF = "shop", "clothing"
ADMIN_PASSWORD = "browser-admin-pw"


@pytest.fixture
def hub_url(start_hub) -> str:  # type: ignore[no-untyped-def]
    return start_hub(ADMIN_PASSWORD, root="browser")  # type: ignore[no-any-return]


def _zip(root: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(root.rglob("*.jpg")):
            zf.write(f, f.relative_to(root).as_posix())
    return buf.getvalue()


def admin_session(hub_url: str) -> httpx.Client:
    """The first admin's logged-in session (users and roles are managed from a session, never a token)."""
    api = httpx.Client(base_url=f"{hub_url}/api/v1", timeout=30)
    login = api.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert login.status_code == 200
    api.headers["X-CSRF-Token"] = login.headers["x-csrf-token"]
    return api


def admin_api(hub_url: str) -> httpx.Client:
    """A REST client holding an every-site admin token (made after logging in as the first admin)."""
    api = httpx.Client(base_url=f"{hub_url}/api/v1", timeout=30)
    login = api.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert login.status_code == 200
    csrf = {"X-CSRF-Token": login.headers["x-csrf-token"]}  # cookie requests that change state need it
    token = api.post("/tokens", json={"name": "browser-test", "role": "admin"}, headers=csrf).json()["token"]
    api.cookies.clear()
    api.headers["Authorization"] = f"Bearer {token}"
    return api


def log_in(page, hub_url: str, username: str, password: str, path: str = "/") -> None:  # type: ignore[no-untyped-def]
    """Open a page, land on the login form, submit it."""
    page.goto(hub_url + path)
    assert "/login?next=" in page.url
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def test_promote_from_the_page(hub_url: str, browser, clothing_subset: Path, mosquitto, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    api = admin_api(hub_url)
    assert api.post("/sites", json={"name": SITE}).status_code == 201
    assert api.post(f"/sites/{SITE}/classifiers", json={"name": CLF}).status_code == 201
    files = {"file": ("train.zip", _zip(clothing_subset / "train"), "application/zip")}
    imported = api.post(f"/sites/{SITE}/classifiers/{CLF}/import?wait=true", files=files).json()
    assert imported["counts"]["imported"] == 60
    # a trainer's side of the job, over REST, with a real (tiny) signed bundle
    job = api.post(f"/sites/{SITE}/classifiers/{CLF}/jobs", json={"mode": "quick"}).json()
    claim = api.post("/jobs/claim", json={"worker": "w1", "gpu": False}).json()
    assert claim["job"]["id"] == job["id"]
    bundle = make_bundle_zip(tmp_path, generate_signing_key(), classifier=CLF)
    r = api.post(f"/jobs/{job['id']}/result", files={"file": ("b.zip", bundle, "application/zip")})
    assert r.status_code == 201, r.text

    retained: dict[str, bytes] = {}
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="browser-listener")
    sub.on_message = lambda c, u, m: retained.__setitem__(m.topic, m.payload)
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe(f"browser/v1/{SITE}/models/+", qos=1)
    sub.loop_start()

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    log_in(page, hub_url, "admin", ADMIN_PASSWORD)
    assert page.get_by_text(f"Site {SITE}").is_visible()
    assert page.get_by_text("60 confirmed").is_visible()
    page.get_by_role("button", name="Promote").first.click()
    page.wait_for_load_state()
    assert page.locator("text=production").first.is_visible()
    page.screenshot(path=str(tmp_path / "after-promote.png"), full_page=True)
    page.close()

    models = api.get(f"/sites/{SITE}/classifiers/{CLF}/models").json()
    assert [m["status"] for m in models] == ["production"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and f"browser/v1/{SITE}/models/{CLF}" not in retained:
        time.sleep(0.2)
    sub.loop_stop()
    announcement = json.loads(retained[f"browser/v1/{SITE}/models/{CLF}"])
    assert announcement["version"] == str(models[0]["version"])


def test_login_page(hub_url: str, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A wrong password says so on the page; a labeller logs in, lands where they wanted, sees their site only."""
    api = admin_api(hub_url)
    for site in (SITE, "other"):
        assert api.post("/sites", json={"name": site}).status_code == 201
        assert api.post(f"/sites/{site}/classifiers", json={"name": CLF}).status_code == 201
    accounts = admin_session(hub_url)
    lab = accounts.post("/users", json={"username": "lena", "password": "lena-password"}).json()
    assert accounts.put(f"/users/{lab['id']}/roles/{SITE}", json={"role": "labeller"}).status_code == 200

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    training = f"/ui/sites/{SITE}/classifiers/{CLF}/training"
    log_in(page, hub_url, "lena", "not-her-password", training)
    assert page.get_by_role("alert").inner_text() == "wrong username or password"
    assert "/login" in page.url
    page.get_by_label("Password").fill("lena-password")  # the form keeps the username and where to go next
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    assert page.url == hub_url + training
    assert page.get_by_role("heading", name=f"Training · {SITE} / {CLF}").is_visible()
    assert page.locator("#nav-user").inner_text() == "lena"
    page.goto(hub_url + "/")
    assert page.get_by_text(f"Site {SITE}").is_visible()
    assert page.get_by_text("Site other").count() == 0
    page.screenshot(path=str(tmp_path / "labeller-overview.png"), full_page=True)
    response = page.goto(hub_url + f"/ui/sites/other/classifiers/{CLF}/training")
    assert response is not None and response.status == 403
    assert "needs the viewer role in site 'other'" in page.get_by_role("alert").inner_text()
    page.get_by_role("button", name="Log out").click()
    page.wait_for_load_state()
    assert page.url.endswith("/login")
    page.close()
