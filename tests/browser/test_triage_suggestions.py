"""The active-learning loop in a real browser against a real hub process on real Mosquitto: frames sent by the
agent's upload rules appear in Triage with the rule, the camera and the model's suggestion; `a` accepts it
(the image goes into the suggested group), `z` undoes that, and the rule / camera filter narrows the grid."""

from __future__ import annotations

from pathlib import Path

import httpx
import paho.mqtt.publish as mqtt_publish

from camfleet_contract.envelope import UploadRuleName, encode_frame, new_header
from camfleet_contract.images import probe_image
from camfleet_contract.messages import Prediction
from camfleet_contract.topics import Topics
from tests.support.polling import unique, wait_for

SITE, CLF = "shop", "clothing"
PASSWORD = "browser-test-password"
UI = f"/ui/sites/{SITE}/classifiers/{CLF}"
API = f"/api/v1/sites/{SITE}/classifiers/{CLF}"
REASON = {"low_confidence": "low_confidence", "anomalous": "anomaly", "sample": "sample"}


def publish(mosquitto, topics: Topics, jpeg: bytes, camera: str, rule: UploadRuleName, label: str, p: float) -> str:  # type: ignore[no-untyped-def]
    _fmt, w, h = probe_image(jpeg)
    header = new_header(
        "agent-1",
        SITE,
        camera,
        jpeg,
        w,
        h,
        reason=REASON[rule],  # type: ignore[arg-type]
        rule=rule,
        predictions=[Prediction(label=label, probability=p)],
    )
    mqtt_publish.single(
        topics.frame(SITE, camera), encode_frame(header, jpeg), qos=1, hostname=mosquitto.host, port=mosquitto.port
    )
    return header.frame_id


def test_accept_the_models_suggestion_in_triage(start_hub, mosquitto, browser, clothing_subset: Path) -> None:  # type: ignore[no-untyped-def]
    root = unique("tri")
    hub_url = start_hub(PASSWORD, root=root)
    api = httpx.Client(base_url=hub_url, timeout=60)
    login = api.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert login.status_code == 200
    api.headers["X-CSRF-Token"] = login.headers["x-csrf-token"]
    assert api.post("/api/v1/sites", json={"name": SITE}).status_code == 201
    for cam in ("door", "till"):
        assert api.post(f"/api/v1/sites/{SITE}/cameras", json={"name": cam}).status_code == 201
    assert api.post(f"/api/v1/sites/{SITE}/classifiers", json={"name": CLF}).status_code == 201
    for g in ("dress", "hat"):
        assert api.post(f"{API}/groups", json={"name": g}).status_code == 201

    topics = Topics(root)
    jpegs = [p.read_bytes() for p in sorted((clothing_subset / "validation" / "hat").glob("*.jpg"))[:3]]
    low = publish(mosquitto, topics, jpegs[0], "door", "low_confidence", "hat", 0.41)
    odd = publish(mosquitto, topics, jpegs[1], "till", "anomalous", "dress", 0.3)
    unknown = publish(mosquitto, topics, jpegs[2], "door", "sample", "tabby", 0.7)
    wait_for(lambda: len(api.get(f"{API}/triage").json()) == 3)
    ids = {r["frame_id"]: r["id"] for r in api.get(f"{API}/triage").json()}

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(hub_url + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{hub_url}/")

    page.goto(hub_url + UI + "/triage")
    grid = page.locator("#triage-grid figure")
    wait_for(lambda: grid.count() == 3)
    card = page.locator(f'#triage-grid figure[data-id="{ids[low]}"]')
    assert card.locator(".hint").inner_text() == "hat 41%"
    assert card.locator("figcaption").inner_text() == "low confidence" + "door"
    assert card.get_attribute("data-suggestion") == "hat"
    other = page.locator(f'#triage-grid figure[data-id="{ids[unknown]}"]')
    assert other.locator(".hint").inner_text() == "model: tabby 70%"
    assert other.get_attribute("data-suggestion") is None

    # a accepts the suggestion of the image under the cursor (the first: the low-confidence frame)
    assert grid.nth(0).get_attribute("data-id") == str(ids[low])
    page.keyboard.press("a")
    wait_for(lambda: api.get(f"/api/v1/images/{ids[low]}").json()["status"] == "GROUP")
    assert api.get(f"/api/v1/images/{ids[low]}").json()["group"] == "hat"
    assert grid.count() == 2

    # z puts it back into triage, NEW again
    page.keyboard.press("z")
    wait_for(lambda: api.get(f"/api/v1/images/{ids[low]}").json()["status"] == "NEW")
    wait_for(lambda: card.count() == 1)

    # an image whose prediction names no group: a says so and moves nothing
    other.click()
    page.keyboard.press("a")
    wait_for(lambda: page.locator("#triage-error").is_visible())
    assert "No suggestion" in page.locator("#triage-error").inner_text()
    assert api.get(f"/api/v1/images/{ids[unknown]}").json()["status"] == "NEW" and grid.count() == 3

    # Enter accepts a selection: both images with a suggestion, each into its own group, one undo entry
    for image in (low, odd):
        page.locator(f'#triage-grid figure[data-id="{ids[image]}"]').click(modifiers=["Control"])
    assert page.locator("#triage-grid figure.selected").count() == 2
    page.keyboard.press("Enter")
    wait_for(lambda: api.get(f"/api/v1/images/{ids[odd]}").json()["status"] == "GROUP")
    assert api.get(f"/api/v1/images/{ids[odd]}").json()["group"] == "dress"
    assert api.get(f"/api/v1/images/{ids[low]}").json()["group"] == "hat"
    wait_for(lambda: grid.count() == 1)
    page.keyboard.press("z")
    wait_for(lambda: {r["frame_id"] for r in api.get(f"{API}/triage").json()} == {low, odd, unknown})

    # the filter: only the anomalous frames, then only the door camera
    page.goto(hub_url + UI + "/triage")
    wait_for(lambda: grid.count() == 3)
    page.select_option("#filter-rule", "anomalous")
    page.click(".triage-filter button[type=submit]")
    page.wait_for_url("**rule=anomalous**")
    wait_for(lambda: grid.count() == 1)
    assert grid.nth(0).get_attribute("data-id") == str(ids[odd])
    page.select_option("#filter-rule", "")
    page.select_option("#filter-camera", "door")
    page.click(".triage-filter button[type=submit]")
    page.wait_for_url("**camera=door**")
    wait_for(lambda: grid.count() == 2)
    assert {grid.nth(i).get_attribute("data-id") for i in range(2)} == {str(ids[low]), str(ids[unknown])}
