"""Every main page of the hub fits a phone: at 390 px wide nothing pushes the whole page sideways (a wide table
scrolls inside its own box), the page's heading shows, and the overview's sample thumbnails are not cut off. One
real hub process, seeded once through the REST API (a site, a classifier with three groups of images, a camera whose
agent reported in), then each page in turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from camfleet_contract.envelope import encode_frame, new_header
from camfleet_contract.images import probe_image
from camfleet_contract.messages import AgentStatus, to_json
from tests.browser.test_hub_page import ADMIN_PASSWORD, _zip, admin_api, log_in
from tests.support.polling import unique, wait_for

SITE, CLF, CAMERA, AGENT = "shop", "clothing", "gate", "edge-1"
PHONE = {"width": 390, "height": 844}
# The overview's sample thumbnails (``td.samples img`` in its groups table): how many, and by how many px each group's
# samples cell sticks out past the visible part of its table (a wide table scrolls inside its own box, so the page's
# scrollWidth does not see the thumbnails cut off at its right edge). Only the overview is held to this: elsewhere
# (History's six columns) a wide table scrolling sideways within its box is the phone layout working as meant.
# The overview's tables (groups, agents) must not even scroll: OVERFLOWING names those that do, with both widths.
OVERFLOWING = """() => [...document.querySelectorAll("main table")]
  .filter(t => t.scrollWidth > t.clientWidth + 1)
  .map(t => `${t.querySelector("th").innerText}: ${t.scrollWidth} px in ${t.clientWidth}`)"""
THUMBNAILS = """() => {
  const cells = [...document.querySelectorAll("td.samples")];
  const cut = {};
  for (const cell of cells) {
    const table = cell.closest("table"), right = cell.getBoundingClientRect().right;
    const edge = Math.min(table.getBoundingClientRect().left + table.clientWidth, window.innerWidth);
    if (right > edge + 1) cut[cell.closest("tr").querySelector("td").innerText.trim()] = Math.round(right - edge);
  }
  return {count: document.querySelectorAll("td.samples img").length, cut};
}"""


def _report_agent_and_frame(mosquitto, root: str, jpeg: bytes) -> None:  # type: ignore[no-untyped-def]
    """An agent's retained status and one frame of its camera, through the real broker."""
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("pub-"))
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    status = AgentStatus(state="online", agent=AGENT, site=SITE, cameras=[CAMERA], fps={CAMERA: 2.0})
    pub.publish(f"{root}/v1/{SITE}/agents/{AGENT}/status", to_json(status), qos=1, retain=True).wait_for_publish(10)
    _fmt, w, h = probe_image(jpeg)
    frame = encode_frame(new_header(AGENT, SITE, CAMERA, jpeg, w, h), jpeg)
    pub.publish(f"{root}/v1/{SITE}/{CAMERA}/frame", frame, qos=1).wait_for_publish(10)
    pub.loop_stop()
    pub.disconnect()


def test_every_main_page_fits_a_phone(start_hub, browser, mosquitto, clothing_subset: Path) -> None:  # type: ignore[no-untyped-def]
    root = unique("bp")
    hub_url = start_hub(ADMIN_PASSWORD, root=root)
    api = admin_api(hub_url)
    assert api.post("/sites", json={"name": SITE}).status_code == 201
    assert api.post(f"/sites/{SITE}/cameras", json={"name": CAMERA}).status_code == 201
    assert api.post(f"/sites/{SITE}/classifiers", json={"name": CLF}).status_code == 201
    files = {"file": ("train.zip", _zip(clothing_subset / "train"), "application/zip")}
    r = api.post(f"/sites/{SITE}/classifiers/{CLF}/import?wait=true", files=files)
    assert r.status_code == 200, r.text
    # a few loose images land in triage as NEW
    loose = sorted((clothing_subset / "validation").rglob("*.jpg"))[:4]
    parts = [("files", (f.name, f.read_bytes(), "image/jpeg")) for f in loose]
    r = api.post(f"/sites/{SITE}/classifiers/{CLF}/import?wait=true", files=parts)
    assert r.status_code == 200, r.text
    images = api.get(f"/sites/{SITE}/classifiers/{CLF}/images").json()
    assert len(images) >= 3
    # one move and one delete, so History and the deleted view have rows
    bulk = f"/sites/{SITE}/classifiers/{CLF}/images/bulk"
    move = {"ids": [images[0]["id"]], "action": "move", "group": "a-rather-long-group-name", "create_group": True}
    assert api.post(bulk, json=move).status_code == 200
    assert api.post(bulk, json={"ids": [images[1]["id"]], "action": "delete"}).status_code == 200

    jpeg = sorted((clothing_subset / "train").rglob("*.jpg"))[0].read_bytes()
    _report_agent_and_frame(mosquitto, root, jpeg)
    wait_for(lambda: api.get("/frames", params={"site": SITE}).json(), "the frame stored")
    wait_for(lambda: api.get(f"/sites/{SITE}/classifiers/{CLF}/rollout").json()["agents"], "the agent known")

    ui = f"/ui/sites/{SITE}/classifiers/{CLF}"
    # (path, the page's main heading): the h2 each page opens its <main> with
    pages = [
        ("/", f"Site {SITE}"),
        (ui, f"Classifier {SITE} / {CLF}"),
        (f"{ui}?group=dress", f"Classifier {SITE} / {CLF}"),
        (f"{ui}/triage", "Triage"),
        (f"{ui}/triage?view=deleted", "Deleted images"),
        (f"{ui}/history", "History"),
        (f"{ui}/training", "Training"),
        (f"{ui}/errors", "Label errors"),
        (f"{ui}/import", "Import images"),
        (f"{ui}/duplicates", "Duplicates"),
        (f"{ui}/outliers", "Outliers"),
        (f"{ui}/analyse", "Analysis"),
        (f"/ui/images/{images[0]['id']}", f"Image {images[0]['id']}"),
        ("/ui/try", "Try it"),
        (f"/ui/sites/{SITE}/logs", "Prediction log"),
        ("/ui/fleet", "Fleet"),
        (f"/ui/fleet/sites/{SITE}/cameras/{CAMERA}", f"{SITE} / {CAMERA}"),
        ("/ui/users", "Users & tokens"),
    ]
    page = browser.new_page(viewport=PHONE)  # a phone
    log_in(page, hub_url, "admin", ADMIN_PASSWORD, "/")
    too_wide: dict[str, int] = {}

    def check(path: str, heading: str, label: str = "") -> None:
        response = page.goto(hub_url + path)
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("networkidle")
        h2 = page.locator("main h2").first
        assert h2.is_visible(), path
        assert heading in h2.inner_text(), (path, h2.inner_text())
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            too_wide[path + label] = width

    overview: dict[str, Any] = {}
    overview_scrolls: list[str] = []
    for path, heading in pages:
        check(path, heading)
        if path == "/":
            overview = page.evaluate(THUMBNAILS)
            overview_scrolls = page.evaluate(OVERFLOWING)
    # a queued training job: the training page shows it with its (empty) chart
    assert api.post(f"/sites/{SITE}/classifiers/{CLF}/jobs", json={"mode": "quick"}).status_code == 201
    check(f"{ui}/training", "Training", " (a job queued)")
    page.close()

    # logged out: the login page
    login = browser.new_page(viewport=PHONE)
    login.goto(hub_url + "/login")
    assert login.get_by_role("heading", name="Log in").is_visible()
    if (width := login.evaluate("document.documentElement.scrollWidth")) > PHONE["width"]:
        too_wide["/login"] = width
    login.close()

    assert not too_wide, f"pages wider than a phone (scrollWidth): {too_wide}"
    assert overview["count"] >= 3, "the overview shows the groups' sample thumbnails"
    assert not overview_scrolls, f"overview tables scrolling sideways on a phone: {overview_scrolls}"
    assert not overview["cut"], (
        f"overview: samples cut off at the groups table's right edge (group: px past it): {overview['cut']}"
    )
