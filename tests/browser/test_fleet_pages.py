"""The fleet pages in a real browser (Debian's Chromium via Playwright) against a real hub process: on a phone-sized
screen the fleet page shows the agent and the camera's latest frame; on the camera page a person draws a region on
the snapshot, saves, and the agent's signed settings carry that region."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from playwright.sync_api import Page

from camfleet_contract.envelope import encode_frame, new_header
from camfleet_contract.images import probe_image
from camfleet_contract.messages import AgentStatus, to_json
from tests.support.polling import unique, wait_for

SITE = "yard"
ADMIN_PASSWORD = "browser-fleet-pw"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def shoot(page: Page, name: str) -> None:
    """Refresh a screenshot in docs/ only when asked (CAMFLEET_SCREENSHOTS=1): a test run leaves the tree clean."""
    if os.environ.get("CAMFLEET_SCREENSHOTS"):
        page.screenshot(path=str(DOCS / name), full_page=True)


@pytest.fixture
def root() -> str:
    return unique("bf")


def _api(hub_url: str) -> httpx.Client:
    api = httpx.Client(base_url=f"{hub_url}/api/v1", timeout=30)
    login = api.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    csrf = {"X-CSRF-Token": login.headers["x-csrf-token"]}
    token = api.post("/tokens", json={"name": "fleet-browser", "role": "admin"}, headers=csrf).json()["token"]
    api.cookies.clear()
    api.headers["Authorization"] = f"Bearer {token}"
    return api


def test_fleet_and_camera_pages(start_hub, browser, mosquitto, clothing_subset: Path, root: str) -> None:  # type: ignore[no-untyped-def]
    hub_url = start_hub(ADMIN_PASSWORD, root=root)
    api = _api(hub_url)
    assert api.post("/sites", json={"name": SITE}).status_code == 201
    assert api.post(f"/sites/{SITE}/cameras", json={"name": "gate"}).status_code == 201
    assert api.post(f"/sites/{SITE}/classifiers", json={"name": "door"}).status_code == 201

    # An agent's status and one frame of its camera, through the real broker.
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("pub-"))
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    status = AgentStatus(state="online", agent="edge-1", site=SITE, cameras=["gate"], fps={"gate": 2.0})
    pub.publish(f"{root}/v1/{SITE}/agents/edge-1/status", to_json(status), qos=1, retain=True).wait_for_publish(10)
    jpeg = sorted((clothing_subset / "train").rglob("*.jpg"))[0].read_bytes()
    _fmt, w, h = probe_image(jpeg)
    frame = encode_frame(new_header("edge-1", SITE, "gate", jpeg, w, h), jpeg)
    pub.publish(f"{root}/v1/{SITE}/gate/frame", frame, qos=1).wait_for_publish(10)
    pub.loop_stop()
    pub.disconnect()
    wait_for(lambda: api.get("/frames", params={"site": SITE}).json(), "the frame stored")
    wait_for(lambda: api.get(f"/sites/{SITE}/classifiers/door/rollout").json()["agents"], "the agent known")

    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    page.goto(f"{hub_url}/ui/fleet")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/ui/fleet")
    card = page.locator('[data-agent="edge-1"]')
    assert "online" in card.inner_text() and "fps gate 2.0" in card.inner_text()
    thumb = page.locator('[data-camera="gate"] img')
    thumb.scroll_into_view_if_needed()  # loading="lazy": a thumbnail below the fold is not fetched
    # the thumbnail is made on first request: wait for it to load, then check it decoded
    page.wait_for_function("(img) => img.complete", arg=thumb.element_handle())
    assert page.evaluate("document.querySelector('[data-camera=\"gate\"] img').naturalWidth") > 0
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # nothing wider than the phone
    shoot(page, "ui-fleet.png")

    page.set_viewport_size({"width": 1280, "height": 900})
    page.locator('[data-camera="gate"]').click()
    page.wait_for_url("**/ui/fleet/sites/yard/cameras/gate")
    page.fill('input[name="source"]', "rtsp://10.0.0.9/stream1")
    snap = page.locator("img#snapshot")
    snap.wait_for()
    page.wait_for_function("document.getElementById('snapshot').complete")
    box = snap.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.8, steps=5)
    page.mouse.up()
    drawn = page.input_value('input[name="region_door"]')
    x0, y0, x1, y1 = (float(v) for v in drawn.split(","))
    assert abs(x0 - 0.25) < 0.03 and abs(y0 - 0.2) < 0.03 and abs(x1 - 0.75) < 0.03 and abs(y1 - 0.8) < 0.03
    assert page.is_checked('input[name="clf_door"]')
    shoot(page, "ui-fleet-camera.png")
    page.get_by_role("button", name="Save and send to the agent").click()
    page.wait_for_url("**/ui/fleet/sites/yard/cameras/gate")
    assert "version 1 saved" in page.locator("#settings-state").inner_text()

    saved = api.get(f"/sites/{SITE}/agents/edge-1/config").json()
    region = saved["cameras"][0]["classifiers"][0]["region"]["rect"]
    assert [round(v, 3) for v in region] == [x0, y0, x1, y1]
    assert saved["cameras"][0]["source"] == "rtsp://10.0.0.9/stream1"
    page.close()
