"""The Import and Duplicates pages in a real browser (Debian's Chromium via Playwright) against a real hub process:
upload a zip and loose files, paste URLs (served from loopback, one missing), search with the fixture provider and
import the ticked results into a group, then keep one image of a near-duplicate pair with one click."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from camfleet_contract.images import decode_image, encode_jpeg
from tests.support.loopback_http import LoopbackServer, loopback_server
from tests.support.polling import wait_for

SITE, CLF = "shop", "clothing"
PASSWORD = "browser-import-password"
UI = f"/ui/sites/{SITE}/classifiers/{CLF}"
API = f"/api/v1/sites/{SITE}/classifiers/{CLF}"
DOCS = Path(__file__).resolve().parents[2] / "docs"
SCREENSHOTS = bool(os.environ.get("CAMFLEET_SCREENSHOTS"))  # set it to refresh docs/hub-import.png, …-duplicates.png


@pytest.fixture
def web() -> Iterator[LoopbackServer]:
    with loopback_server() as server:
        yield server


@pytest.fixture
def hub_url(start_hub, web: LoopbackServer) -> str:  # type: ignore[no-untyped-def]
    return start_hub(  # type: ignore[no-any-return]
        PASSWORD,
        f'[imports]\nsearch_provider = "fixture"\nsearch_endpoint = "{web.url}/json/search"\n'
        "url_allow_private = true\n",
    )


def jobs(api: httpx.Client) -> list[dict[str, Any]]:
    return api.get(f"{API}/imports").json()  # type: ignore[no-any-return]


def finished(api: httpx.Client, count: int) -> list[dict[str, Any]]:
    found = jobs(api)
    done = [j for j in found if j["status"] in ("succeeded", "failed", "cancelled")]
    return found if len(found) >= count and len(done) == len(found) else []


def test_import_sources_and_duplicates_in_the_browser(  # type: ignore[no-untyped-def]
    hub_url: str, browser, clothing_subset: Path, web: LoopbackServer, lite0_default_bundle: bytes, tmp_path: Path
) -> None:
    api = httpx.Client(base_url=hub_url, timeout=60)
    login = api.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert login.status_code == 200
    api.headers["X-CSRF-Token"] = login.headers["x-csrf-token"]  # cookie requests that change state need it
    assert api.post("/api/v1/sites", json={"name": SITE}).status_code == 201
    assert api.post(f"/api/v1/sites/{SITE}/classifiers", json={"name": CLF}).status_code == 201
    r = api.put("/api/v1/models/default", files={"file": ("d.zip", lite0_default_bundle, "application/zip")})
    assert r.status_code == 200, r.text

    train = clothing_subset / "train"
    dresses = sorted((train / "dress").glob("*.jpg"))
    zipped = tmp_path / "dresses.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for f in dresses[:4]:
            zf.write(f, f"dress/{f.name}")
    copy = tmp_path / "copy-of-first-dress.jpg"  # saved again: other bytes, nearly the same pixels
    copy.write_bytes(encode_jpeg(decode_image(dresses[0].read_bytes()), 70))
    loose = tmp_path / "hat ünïcødé.jpg"
    loose.write_bytes(sorted((train / "hat").glob("*.jpg"))[0].read_bytes())

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(hub_url + UI + "/import")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{UI}/import")

    # a folder-per-class zip, then loose files (one a near-duplicate of a zipped image)
    page.set_input_files("#file-input", str(zipped))
    wait_for(lambda: finished(api, 1))
    page.set_input_files("#file-input", [str(copy), str(loose)])
    upload = wait_for(lambda: finished(api, 2))[0]
    assert upload["kind"] == "upload" and upload["counts"] == {"imported": 1, "near_duplicate": 1}, upload
    rows = page.locator("#jobs tbody tr")
    wait_for(lambda: rows.count() == 2 and "succeeded" in rows.nth(0).inner_text())
    assert "1 imported" in rows.nth(0).inner_text() and "1 near-duplicate" in rows.nth(0).inner_text()

    # URLs: one served, one missing; the per-file list says why
    hats = sorted((train / "hat").glob("*.jpg"))
    web.images["h1.jpg"] = hats[1].read_bytes()
    page.fill("#urls", f"{web.image_url('h1.jpg')}\n{web.url}/missing\n")
    page.click("#urls-form button[type=submit]")
    wait_for(lambda: finished(api, 3))
    wait_for(lambda: "1 rejected" in rows.nth(0).inner_text())
    rows.nth(0).locator("button", has_text="files").click()
    wait_for(lambda: "404" in page.locator("#items-body").inner_text())

    # web search (fixture provider): tick two results, import them into "hat"
    for i in (2, 3):
        web.images[f"h{i}.jpg"] = hats[i].read_bytes()
    web.json["search"] = [
        {
            "thumbnail_url": web.image_url(f"h{i}.jpg"),
            "image_url": web.image_url(f"h{i}.jpg"),
            "title": f"hat {i}",
            "source_page": f"{web.url}/page/{i}",
        }
        for i in (2, 3)
    ]
    page.fill("#target-group", "hat")
    page.fill("#search-term", "hat")
    page.click("#search-form button[type=submit]")
    wait_for(lambda: page.locator("#search-results label").count() == 2)
    page.click("#search-all")
    page.click("#search-import")
    search_job = wait_for(lambda: finished(api, 4))[0]
    assert search_job["kind"] == "search" and search_job["counts"] == {"imported": 2, "groups": {"hat": 2}}
    wait_for(lambda: "search" in rows.nth(0).inner_text() and "succeeded" in rows.nth(0).inner_text())
    if SCREENSHOTS:
        page.screenshot(path=str(DOCS / "hub-import.png"), full_page=True)

    # duplicates: the re-saved copy next to its original; keep the left one
    page.goto(hub_url + UI + "/duplicates")
    pair = page.locator(".dup-pair").first
    wait_for(lambda: page.locator(".dup-pair").count() >= 1)
    left, right = int(pair.get_attribute("data-left") or 0), int(pair.get_attribute("data-right") or 0)
    assert api.get(f"/api/v1/images/{right}").json()["original_name"] == copy.name  # the newer image on the right
    if SCREENSHOTS:
        page.screenshot(path=str(DOCS / "hub-duplicates.png"), full_page=True)
    pair.locator("button.keep-left").click()
    wait_for(lambda: api.get(f"/api/v1/images/{right}").json()["status"] == "DELETED")
    assert api.get(f"/api/v1/images/{left}").json()["status"] != "DELETED"
    wait_for(lambda: page.locator(f'.dup-pair[data-right="{right}"]').count() == 0)
    # and the deleted copy is not offered again when uploaded once more
    body = io.BytesIO(copy.read_bytes())
    again = api.post(f"{API}/import?wait=true", files=[("files", (copy.name, body, "image/jpeg"))]).json()
    assert again["counts"] == {"previously_deleted": 1}, json.dumps(again)
