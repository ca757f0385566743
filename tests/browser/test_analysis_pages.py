"""Try it, Analysis and Outliers in a real browser against a real hub process: an upload and a drawing get their
top groups and the anomaly flag, an upload is added to a group; a camera frame's image is analysed (bars of every
group, neighbours one click from their pages); Outliers deletes with d and z undoes; a site's Logs page lists the
predictions; the Try page fits a phone."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import httpx
from PIL import Image as PILImage

from camfleet_contract.signing import generate_signing_key
from camfleet_contract.topics import Topics
from tests.browser.test_triage_suggestions import publish
from tests.hub.api.apihelpers import bundle_zip, dataset_zip
from tests.support.polling import unique, wait_for

SITE, CLF = "shop", "clothes"
PASSWORD = "browser-test-password"
UI = f"/ui/sites/{SITE}/classifiers/{CLF}"
API = f"/api/v1/sites/{SITE}/classifiers/{CLF}"
DEFAULT_CLASSES = ["jersey", "sock", "cowboy_hat"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
SCREENSHOTS = bool(os.environ.get("CAMFLEET_SCREENSHOTS"))  # set: refresh docs/ui-{try,analysis,outliers,logs}.png


def shoot(page: Any, name: str) -> None:
    """A full-page PNG for docs/ once every <img> has loaded (a half-loaded thumbnail would show as a blank box).
    A short viewport for the shot lets the page's own height, not the window's, set the PNG's; 256 colours keep a
    page of photos under ~300 KB (the full-colour PNG of the Analysis page is over 500 KB)."""
    if SCREENSHOTS:
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        size = page.viewport_size
        page.set_viewport_size({"width": size["width"], "height": 300})
        shot = PILImage.open(io.BytesIO(page.screenshot(full_page=True)))
        page.set_viewport_size(size)
        shot.quantize(256, method=PILImage.Quantize.MEDIANCUT).save(DOCS / name, optimize=True)


def test_try_analyse_outliers(start_hub, mosquitto, browser, clothing_subset: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = unique("ana")
    hub_url = start_hub(PASSWORD, root=root)
    api = httpx.Client(base_url=hub_url, timeout=60)
    login = api.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert login.status_code == 200
    api.headers["X-CSRF-Token"] = login.headers["x-csrf-token"]
    default = bundle_zip(tmp_path, generate_signing_key(), classes=DEFAULT_CLASSES, classifier="imagenet")
    r = api.put("/api/v1/models/default", files={"file": ("d.zip", default, "application/zip")})
    assert r.status_code < 300, r.text
    assert api.post("/api/v1/sites", json={"name": SITE}).status_code == 201
    assert api.post(f"/api/v1/sites/{SITE}/cameras", json={"name": "door"}).status_code == 201
    assert api.post(f"/api/v1/sites/{SITE}/classifiers", json={"name": CLF}).status_code == 201
    assert api.patch(f"{API}/duplicates", json={"max_equal_distance": 0.0}).status_code == 200
    data = dataset_zip(clothing_subset / "train", 3)
    r = api.post(f"{API}/import?wait=true", files={"file": ("d.zip", data, "application/zip")})
    assert r.status_code == 200, r.text
    images = api.get(f"{API}/images?limit=100").json()
    assert len(images) == 9
    hats = lambda: sum(1 for i in api.get(f"{API}/images?limit=100").json() if i["group"] == "hat")  # noqa: E731

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(hub_url + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{hub_url}/")

    # Try it: an uploaded photo, the ImageNet default first
    photo = sorted((clothing_subset / "validation" / "hat").glob("*.jpg"))[0]
    page.goto(hub_url + "/ui/try")
    results = page.locator("#try-results li")
    page.set_input_files("#try-file", str(photo))
    wait_for(lambda: results.count() == 3)
    assert {results.nth(i).locator(".name").inner_text() for i in range(3)} == set(DEFAULT_CLASSES)
    assert "ImageNet default" in page.locator("#try-model").inner_text()
    assert "threshold" in page.locator("#try-anomaly").inner_text()
    assert page.locator("#try-add").is_hidden()  # nothing to add to for the ImageNet default

    # ... then the site classifier (no production model: the default answers), added to the hat group
    page.select_option("#try-target", f"{SITE}/{CLF}")
    wait_for(lambda: page.locator("#try-add").is_visible())
    before = hats()
    page.select_option("#try-add-group", "hat")
    page.click("#try-add button[type=submit]")
    wait_for(lambda: "added" in page.locator("#try-add-status").inner_text())
    wait_for(lambda: hats() == before + 1)
    shoot(page, "ui-try.png")

    # a drawing: strokes on the canvas, classified as a PNG
    page.select_option("#try-target", "")
    page.click("#try-draw-clear")
    box = page.locator("#try-canvas").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 40, box["y"] + 40)
    page.mouse.down()
    for step in range(1, 12):
        page.mouse.move(box["x"] + 40 + step * 18, box["y"] + 40 + step * 14)
    page.mouse.up()
    with page.expect_response(lambda resp: resp.url.endswith("/ui/try/classify")) as answer:
        page.click("#try-draw-use")
    assert answer.value.status == 200
    drawn = answer.value.json()
    assert drawn["model"]["default"] is True and len(drawn["top"]) == 3
    wait_for(lambda: results.count() == 3 and page.locator("#try-preview").is_visible())

    # a camera frame: its image page links to the Analysis page
    jpeg = sorted((clothing_subset / "validation" / "dress").glob("*.jpg"))[0].read_bytes()
    publish(mosquitto, Topics(root), jpeg, "door", "sample", "dress", 0.7)
    wait_for(lambda: len(api.get(f"{API}/triage").json()) == 1)
    frame_image = api.get(f"{API}/triage").json()[0]["id"]
    page.goto(hub_url + f"/ui/images/{frame_image}")
    page.click("#image-analyse")
    page.wait_for_url(f"**{UI}/analyse?image_id={frame_image}")
    assert page.locator("#prob-chart rect.bar").count() == 3
    assert page.locator("#analysis-anomaly").inner_text().startswith(("Anomalous", "Not anomalous"))
    neighbours = page.locator("#neighbours figure.neighbour")
    assert neighbours.count() == 8
    shoot(page, "ui-analysis.png")
    page.fill("#analysis ~ section input[name=k]", "3")
    page.click("#analysis ~ section button[type=submit]")
    wait_for(lambda: neighbours.count() == 3)
    first = neighbours.nth(0).get_attribute("data-image-id")
    neighbours.nth(0).locator("a").first.click()
    page.wait_for_url(f"**/ui/images/{first}")

    # Outliers: d deletes the row under the cursor, z undoes it
    page.goto(hub_url + UI + "/outliers")
    rows = page.locator("#outliers tr.outlier")
    assert rows.count() == 10
    shoot(page, "ui-outliers.png")
    target = rows.nth(0).get_attribute("data-image-id")
    page.keyboard.press("d")
    wait_for(lambda: api.get(f"/api/v1/images/{target}").json()["status"] == "DELETED")
    page.keyboard.press("z")
    wait_for(lambda: api.get(f"/api/v1/images/{target}").json()["status"] == "GROUP")

    # Logs: three REST predictions beside the one Try it logged for the site classifier
    jpegs = [api.get(f"/api/v1/images/{images[i]['id']}/content").content for i in range(3)]
    files = [("files", (f"img-{i}.jpg", data, "image/jpeg")) for i, data in enumerate(jpegs)]
    r = api.post("/api/v1/classify", files=files, data={"site": SITE, "classifier": CLF})
    assert r.status_code == 200, r.text
    page.goto(hub_url + f"/ui/sites/{SITE}/logs")
    log_rows = page.locator(".log-row")
    assert log_rows.count() == 4
    assert any("img-0.jpg" in row for row in log_rows.all_inner_texts())
    shoot(page, "ui-logs.png")

    # on a phone: the Try and Analysis pages fit the screen's width
    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone.context.add_cookies(page.context.cookies())
    for path in ("/ui/try", f"{UI}/analyse?image_id={frame_image}"):
        phone.goto(hub_url + path)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390, path
