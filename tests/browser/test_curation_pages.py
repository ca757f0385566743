"""Curation in a real browser (Debian's Chromium via Playwright) against a real hub process: log in, create a site
and a classifier from the overview, create groups on the classifier page, triage real clothing images with the
keyboard (number keys, d, arrows, z), select several with shift-click and move them, check the counts, undo from
History, see that a deleted image re-imported by zip is reported previously deleted and not offered again, and use
a deleted image as "none of the above" from the classifier page (the browser asks with the count)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.polling import wait_for

SITE, CLF = "shop", "clothing"
PASSWORD = "browser-test-password"
UI = f"/ui/sites/{SITE}/classifiers/{CLF}"
API = f"/api/v1/sites/{SITE}/classifiers/{CLF}"


@pytest.fixture
def hub_url(start_hub) -> str:  # type: ignore[no-untyped-def]
    return start_hub(PASSWORD)  # type: ignore[no-any-return]


def inbox_zip(files: list[Path]) -> bytes:
    """Files at the top of the zip land in the inbox (NEW)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in files:
            zf.write(f, f"{f.parent.name}-{f.name}")
    return buf.getvalue()


def counts(api: httpx.Client) -> dict[str, dict[str, int]]:
    return {g["name"]: g["counts"] for g in api.get(f"{API}/groups").json()}


def new_ids(api: httpx.Client) -> list[int]:
    return [i["id"] for i in api.get(f"{API}/images", params={"status": "NEW", "limit": 1000}).json()]


def test_triage_with_the_keyboard(hub_url: str, browser, clothing_subset: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(hub_url + "/")
    assert "/login" in page.url
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{hub_url}/")

    # a site and a classifier from the overview's forms, which land on the classifier page
    page.fill("#create-site input[name=name]", SITE)
    page.click("#create-site button[type=submit]")
    page.wait_for_url(f"**/#site-{SITE}")
    page.fill(f"#create-classifier-{SITE} input[name=name]", CLF)
    page.click(f"#create-classifier-{SITE} button[type=submit]")
    page.wait_for_url(f"**{UI}")

    api = httpx.Client(base_url=hub_url, timeout=60)
    login = api.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert login.status_code == 200
    api.headers["X-CSRF-Token"] = login.headers["x-csrf-token"]  # cookie requests that change state need it
    files = sorted((clothing_subset / "train" / "dress").glob("*.jpg"))[:6]
    files += sorted((clothing_subset / "train" / "hat").glob("*.jpg"))[:6]
    archive = inbox_zip(files)
    imported = api.post(f"{API}/import?wait=true", files={"file": ("inbox.zip", archive, "application/zip")}).json()
    total = imported["counts"]["imported"]
    assert total >= 10, imported
    inbox = new_ids(api)
    assert len(inbox) == total

    page.goto(hub_url + UI)

    # groups from the classifier page's form
    for name in ("dress", "hat"):
        page.fill("#new-group-name", name)
        page.click("#create-group")
        page.wait_for_load_state()
    assert page.locator('#group-tree li[data-group="dress"]').is_visible()
    assert page.locator('#group-tree li[data-group="hat"]').is_visible()

    # triage: 1 puts the first image into "dress"
    page.goto(hub_url + UI + "/triage")
    grid = page.locator("#triage-grid figure")
    wait_for(lambda: grid.count() == total)
    assert page.locator('[data-hotkey="1"]').inner_text() == "dress"
    first = int(grid.nth(0).get_attribute("data-id") or 0)
    page.keyboard.press("1")
    wait_for(lambda: counts(api)["dress"]["GROUP"] == 1)
    assert grid.count() == total - 1 and first not in new_ids(api)

    # arrow right, then d deletes the second image of what is left
    target = int(grid.nth(1).get_attribute("data-id") or 0)
    page.keyboard.press("ArrowRight")
    assert page.locator("#triage-grid figure.cursor").get_attribute("data-id") == str(target)
    page.keyboard.press("d")
    wait_for(lambda: target not in new_ids(api) and api.get(f"/api/v1/images/{target}").json()["status"] == "DELETED")
    assert grid.count() == total - 2

    # z undoes the delete: the image is back in the grid and NEW again
    page.keyboard.press("z")
    wait_for(lambda: api.get(f"/api/v1/images/{target}").json()["status"] == "NEW")
    wait_for(lambda: page.locator(f'#triage-grid figure[data-id="{target}"]').count() == 1)
    assert grid.count() == total - 1

    # shift-click selects three, move them to "hat" with the selection controls
    page.locator("#triage-grid figure").nth(0).click()
    page.locator("#triage-grid figure").nth(2).click(modifiers=["Shift"])
    assert page.locator("#triage-grid figure.selected").count() == 3
    page.select_option("#move-target", "hat")
    page.click("#move-selected")
    wait_for(lambda: counts(api)["hat"]["GROUP"] == 3)
    assert grid.count() == total - 4

    # drag across two images selects both; Escape clears the selection
    a, b = (
        page.locator("#triage-grid figure").nth(0).bounding_box(),
        page.locator("#triage-grid figure").nth(1).bounding_box(),
    )
    assert a is not None and b is not None
    page.mouse.move(a["x"] + 20, a["y"] + 20)
    page.mouse.down()
    page.mouse.move(b["x"] + 20, b["y"] + 20, steps=5)
    page.mouse.up()
    assert page.locator("#triage-grid figure.selected").count() == 2
    page.keyboard.press("Escape")
    assert page.locator("#triage-grid figure.selected").count() == 0
    page.locator("#triage-grid figure").nth(0).click()  # a plain click only moves the cursor
    assert page.locator("#triage-grid figure.selected").count() == 0

    # 2 on the cursor image, then delete one more and keep it deleted
    page.keyboard.press("2")
    wait_for(lambda: counts(api)["hat"]["GROUP"] == 4)
    gone = int(grid.nth(0).get_attribute("data-id") or 0)
    page.keyboard.press("d")
    wait_for(lambda: api.get(f"/api/v1/images/{gone}").json()["status"] == "DELETED")
    assert grid.count() == total - 6

    # d and z at once: z waits for the delete's answer and undoes that delete, not the move before it
    quick = int(grid.nth(0).get_attribute("data-id") or 0)
    page.keyboard.press("d")
    page.keyboard.press("z")
    wait_for(lambda: page.locator(f'#triage-grid figure[data-id="{quick}"]').count() == 1)
    wait_for(lambda: api.get(f"/api/v1/images/{quick}").json()["status"] == "NEW")
    assert counts(api)["hat"]["GROUP"] == 4 and grid.count() == total - 6

    # counts on the classifier page
    page.goto(hub_url + UI)
    assert page.locator('[data-count="dress"]').inner_text() == "1"
    assert page.locator('[data-count="hat"]').inner_text() == "4"
    assert f"{total - 6}</strong> new image" in page.content()

    # History: undo the last "hat" move from the page
    page.goto(hub_url + UI + "/history")
    rows = page.locator("#history tbody tr")
    assert rows.count() >= 6
    hat_move = page.locator("#history tbody tr", has_text="moved 1 image(s) to 'hat'")
    hat_move.locator("button.undo").click()
    page.wait_for_load_state()
    assert page.locator("#page-error").count() == 0
    wait_for(lambda: counts(api)["hat"]["GROUP"] == 3)

    # re-import the same zip: the deleted image is reported and not offered again
    again = api.post(f"{API}/import?wait=true", files={"file": ("inbox.zip", archive, "application/zip")}).json()
    assert again["counts"].get("previously_deleted") == 1, again
    assert gone not in new_ids(api)
    page.goto(hub_url + UI + "/triage?view=deleted")
    wait_for(lambda: page.locator("#triage-grid figure").count() == 1)
    page.keyboard.press("r")
    wait_for(lambda: api.get(f"/api/v1/images/{gone}").json()["status"] == "NEW")

    # deleted again, then used as "none of the above" from the classifier page: the browser asks with the count
    assert api.post(f"{API}/images/bulk", json={"ids": [gone], "action": "delete"}).status_code == 200
    page.goto(hub_url + UI)
    button = page.locator("#deleted-to-none")
    assert button.inner_text() == "Use the 1 deleted image(s) as none of the above"
    questions: list[str] = []

    def accept(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    button.click()
    page.wait_for_url("**?group=none")
    assert questions and "Move 1 deleted image(s) into a new group 'none'" in questions[0]
    assert page.locator('#group-tree li[data-group="none"] .badge.none').inner_text() == "none of the above"
    moved = api.get(f"/api/v1/images/{gone}").json()
    assert (moved["status"], moved["group"]) == ("GROUP", "none")
    page.close()
