"""The hub's page in a real browser (Debian's Chromium via Playwright) against a real hub process:
a person sees the dataset and a freshly trained candidate, presses Promote, and the fleet follows."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest

from camfleet_contract.signing import generate_signing_key
from tests.support.tinybundle import make_bundle_zip

SITE, CLF = "shop", "clothing"


@pytest.fixture
def hub_url(tmp_path: Path, mosquitto, free_port) -> Iterator[str]:  # type: ignore[no-untyped-def]
    port = free_port()
    cfg = tmp_path / "hub.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "hub"}"\n[http]\nport = {port}\n'
        f'[mqtt]\nembedded = false\nport = {mosquitto.port}\nroot = "browser"\nclient_id = "browser-hub"\n'
    )
    log = open(tmp_path / "hub.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "camfleet_hub", "serve", "--config", str(cfg)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "hub.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/api/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _zip(root: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(root.rglob("*.jpg")):
            zf.write(f, f.relative_to(root).as_posix())
    return buf.getvalue()


def test_promote_from_the_page(hub_url: str, browser, clothing_subset: Path, mosquitto, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    api = httpx.Client(base_url=f"{hub_url}/api/v1", timeout=30)
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
    page.goto(hub_url + "/")
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
