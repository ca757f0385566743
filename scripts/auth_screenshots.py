"""Screenshots of the login page and the Users & tokens page for docs/ (docs/ui-login.png, docs/ui-users.png).

Starts a real hub (embedded broker, SQLite, auth on) on free loopback ports, adds two sites, users with roles and
tokens over REST, then drives Debian's Chromium: a failed login, a login, a new token shown once.
Run: ``.venv/bin/python scripts/auth_screenshots.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from common import CHROMIUM_ARGS, free_port, hub_process  # noqa: E402

PASSWORD = "screenshot-admin"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        mqtt_port = free_port()
        config = f'[mqtt]\nport = {mqtt_port}\n[auth]\nadmin_password = "{PASSWORD}"\n[ingest]\nenabled = false\n'
        with hub_process(tmp, config) as base:
            api = httpx.Client(base_url=f"{base}/api/v1", timeout=60)
            api.post("/auth/login", json={"username": "admin", "password": PASSWORD}).raise_for_status()
            for site in ("shop", "temple"):
                api.post("/sites", json={"name": site}).raise_for_status()
            for name, roles in (("maria", {"shop": "admin"}), ("tom", {"shop": "labeller", "temple": "viewer"})):
                uid = api.post("/users", json={"username": name, "password": "a-long-password"}).json()["id"]
                for site, role in roles.items():
                    api.put(f"/users/{uid}/roles/{site}", json={"role": role}).raise_for_status()
            api.post("/tokens", json={"name": "trainer-gpu-1", "role": "admin"}).raise_for_status()
            old = api.post("/tokens", json={"name": "old script", "site": "temple", "role": "viewer"}).json()
            api.delete(f"/tokens/{old['id']}").raise_for_status()

            docs = REPO / "docs"
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 720})
                page.goto(f"{base}/ui/users")
                page.get_by_label("Username").fill("admin")
                page.get_by_label("Password").fill("wrong password")
                page.get_by_role("button", name="Log in").click()
                page.wait_for_load_state()
                page.screenshot(path=str(docs / "ui-login.png"))
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Log in").click()
                page.wait_for_load_state()
                form = page.locator("#add-token")
                form.locator("input[name=name]").fill("agent shop-1")
                form.locator("select[name=site]").select_option("shop")
                form.locator("select[name=role]").select_option("viewer")
                form.get_by_role("button", name="Create token").click()
                page.wait_for_load_state()
                page.screenshot(path=str(docs / "ui-users.png"), full_page=True)
                browser.close()
            print("wrote docs/ui-login.png, docs/ui-users.png")


if __name__ == "__main__":
    main()
