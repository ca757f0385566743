"""Screenshots of the curation pages (classifier, triage, history, image) into docs/ui-*.png.

Starts a real hub (auth on), imports real clothing images from ../shared/data/clothing (some classes into groups,
a mixed batch into the triage inbox), makes a few changes so the history has entries, then photographs the pages
with Debian's Chromium through Playwright.
    python scripts/curation_screenshots.py
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from common import CHROMIUM_ARGS, SHARED_DATA, hub_process, mosquitto  # noqa: E402

SITE, CLF, PASSWORD = "shop", "clothing", "screenshots-only"
GROUPED = {"dress": 40, "hat": 25, "shoes": 60, "shirt": 8, "pants": 30}
INBOX = ["t-shirt", "skirt", "outwear", "dress", "hat", "shoes"]


def folder_zip(entries: list[tuple[str, Path]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, path in entries:
            zf.write(path, name)
    return buf.getvalue()


def main() -> None:
    train = SHARED_DATA / "clothing" / "train"
    grouped = [(f"{c}/{p.name}", p) for c, n in GROUPED.items() for p in sorted((train / c).glob("*.jpg"))[:n]]
    inbox = [(f"{c}-{p.name}", p) for c in INBOX for p in sorted((train / c).glob("*.jpg"))[-8:]]
    with tempfile.TemporaryDirectory() as tmp_s, mosquitto() as mqtt_port:
        tmp = Path(tmp_s)
        config = (
            f'[mqtt]\nembedded = false\nport = {mqtt_port}\nroot = "shots"\nclient_id = "shots"\n'
            f'[auth]\nadmin_password = "{PASSWORD}"\n[ingest]\nenabled = false\n'
        )
        with hub_process(tmp, config) as base:
            api = httpx.Client(base_url=base, timeout=300)
            login = api.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
            login.raise_for_status()
            api.headers["X-CSRF-Token"] = login.headers["X-CSRF-Token"]  # a session client echoes it
            api.post("/api/v1/sites", json={"name": SITE}).raise_for_status()
            api.post("/api/v1/sites", json={"name": "temple"}).raise_for_status()
            clf = f"/api/v1/sites/{SITE}/classifiers/{CLF}"
            api.post(f"/api/v1/sites/{SITE}/classifiers", json={"name": CLF}).raise_for_status()
            api.post("/api/v1/sites/temple/classifiers", json={"name": CLF}).raise_for_status()
            for archive in (folder_zip(grouped), folder_zip(inbox)):
                r = api.post(f"{clf}/import?wait=true", files={"file": ("d.zip", archive, "application/zip")})
                r.raise_for_status()
            api.post(f"{clf}/groups", json={"name": "tops"}).raise_for_status()
            api.patch(f"{clf}/groups/shirt", json={"parent": "tops"}).raise_for_status()
            nothing = {"name": "nothing", "common": True, "none_of_the_above": True}  # the old tool's advice
            api.post(f"{clf}/groups", json=nothing).raise_for_status()
            new = [i["id"] for i in api.get(f"{clf}/images", params={"status": "NEW", "limit": 200}).json()]
            api.post(f"{clf}/images/bulk", json={"ids": new[:4], "action": "move", "group": "dress"}).raise_for_status()
            api.post(f"{clf}/images/bulk", json={"ids": new[4:6], "action": "delete"}).raise_for_status()
            undo = api.post(f"{clf}/images/bulk", json={"ids": new[6:8], "action": "move", "group": "hat"}).json()
            api.post(f"/api/v1/history/{undo['id']}/undo").raise_for_status()
            shown = api.get(f"{clf}/images", params={"status": "GROUP", "limit": 1}).json()[0]["id"]

            docs = REPO / "docs"
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1360, "height": 900})
                page.goto(f"{base}/login")
                page.fill("input[name=username]", "admin")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_load_state("networkidle")
                ui = f"{base}/ui/sites/{SITE}/classifiers/{CLF}"
                page.goto(f"{ui}?group=shoes")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(docs / "ui-classifier.png"), full_page=True)
                page.goto(f"{ui}/triage")
                page.wait_for_selector("#triage-grid figure")
                page.wait_for_load_state("networkidle")
                page.keyboard.press("ArrowRight")
                page.locator("#triage-grid figure").nth(3).click(modifiers=["Shift"])
                page.screenshot(path=str(docs / "ui-triage.png"))
                page.goto(f"{ui}/history")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(docs / "ui-history.png"))
                page.goto(f"{base}/ui/images/{shown}")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(docs / "ui-image.png"))
                browser.close()
            print("wrote", ", ".join(f"docs/ui-{n}.png" for n in ("classifier", "triage", "history", "image")))
            if os.environ.get("SHOW_HUB_LOG"):
                print((tmp / "hub.log").read_text()[-3000:])


if __name__ == "__main__":
    main()
