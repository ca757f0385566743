"""Staged rollout and rollback through the fleet page in a real browser (Debian's Chromium via Playwright) against a
real hub process on the session Mosquitto: stage a version on one named agent, see the expected version per agent,
an anomaly-rate jump reported by that agent, widen to another and promote to all, roll back in one click (which asks
first) - checking the page and the REST state at each step."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from camfleet_contract.messages import AgentStatus, FirstFrames, SwapBehaviour, to_json
from camfleet_contract.signing import generate_signing_key
from tests.support.polling import unique, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub" / "api"))  # the hub tests' bundle helpers

from apihelpers import bundle_zip, dataset_zip  # noqa: E402

SITE, CLF = "lot", "clothes"
AGENTS = ("edge-a", "edge-b", "edge-c")
ADMIN_PASSWORD = "browser-rollout-pw"
ROLLOUT = f"/sites/{SITE}/classifiers/{CLF}/rollout"


@pytest.fixture
def root() -> str:
    return unique("br")


def _api(hub_url: str) -> httpx.Client:
    api = httpx.Client(base_url=f"{hub_url}/api/v1", timeout=60)
    login = api.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    csrf = {"X-CSRF-Token": login.headers["x-csrf-token"]}
    token = api.post("/tokens", json={"name": "rollout-browser", "role": "admin"}, headers=csrf).json()["token"]
    api.cookies.clear()
    api.headers["Authorization"] = f"Bearer {token}"
    return api


def _versions(api: httpx.Client, clothing: Path, tmp: Path, n: int) -> list[int]:
    clf = f"/sites/{SITE}/classifiers/{CLF}"
    data = dataset_zip(clothing / "train", 2)
    assert api.post(f"{clf}/import?wait=true", files={"file": ("d.zip", data, "application/zip")}).status_code == 200
    key = generate_signing_key()
    ids = []
    for seed in range(n):
        job = api.post(f"{clf}/jobs", json={}).json()["id"]
        assert api.post("/jobs/claim", json={"worker": "t"}).json()["job"]["id"] == job
        r = api.post(f"/jobs/{job}/result", files={"file": ("b.zip", bundle_zip(tmp, key, model_seed=seed), "x")})
        assert r.status_code in (200, 201), r.text
        ids.append(int(r.json()["id"]))
    return ids


class Agents:
    """Publishes the retained statuses three agents would (real broker)."""

    def __init__(self, mosquitto: Any, root: str) -> None:
        self.root = root
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("agents-"))
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()

    def status(self, agent: str, version: str, first_frames: dict[str, SwapBehaviour] | None = None) -> None:
        msg = AgentStatus(
            state="online", agent=agent, site=SITE, models={CLF: version}, first_frames=first_frames or {}
        )
        topic = f"{self.root}/v1/{SITE}/agents/{agent}/status"
        self.client.publish(topic, to_json(msg), qos=1, retain=True).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _expected(page: Any) -> dict[str, str]:
    return {
        a: page.locator(f'#rollout-{SITE}-{CLF} [data-rollout-agent="{a}"] .expected').inner_text().strip()
        for a in AGENTS
    }


def _rest_expected(api: httpx.Client) -> dict[str, int | None]:
    return {a["agent"]: a["expected_version"] for a in api.get(ROLLOUT).json()["agents"]}


def test_stage_widen_promote_and_roll_back_from_the_fleet_page(  # type: ignore[no-untyped-def]
    start_hub, browser, mosquitto, clothing_subset: Path, tmp_path: Path, root: str
) -> None:
    hub_url = start_hub(ADMIN_PASSWORD, root=root)
    api = _api(hub_url)
    assert api.post("/sites", json={"name": SITE}).status_code == 201
    assert api.post(f"/sites/{SITE}/classifiers", json={"name": CLF}).status_code == 201
    v1, _v2 = _versions(api, clothing_subset, tmp_path, 2)
    assert api.post(f"/models/{v1}/promote").status_code == 200
    agents = Agents(mosquitto, root)
    try:
        for a in AGENTS:
            agents.status(a, "1")
        wait_for(lambda: len(api.get(ROLLOUT).json()["agents"]) == 3, "three agents known")

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{hub_url}/ui/fleet?site={SITE}")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/ui/fleet*")
        block = page.locator(f"#rollout-{SITE}-{CLF}")
        assert _expected(page) == dict.fromkeys(AGENTS, "1")

        # Stage version 2 on edge-b only.
        block.get_by_label("version to stage").fill("2")
        block.get_by_label("agents to stage on").fill("edge-b")
        block.get_by_role("button", name="Stage / widen").click()
        page.wait_for_url("**/ui/fleet?site=lot*")
        assert "staged 2 on edge-b" in " ".join(block.inner_text().split())
        assert _expected(page) == {"edge-a": "1", "edge-b": "2", "edge-c": "1"}
        assert "(staged)" in block.locator('[data-rollout-agent="edge-b"]').inner_text()
        body = api.get(ROLLOUT).json()
        assert (body["production_version"], body["staged_version"], body["staged_agents"]) == (1, 2, ["edge-b"])
        assert _rest_expected(api) == {"edge-a": 1, "edge-b": 2, "edge-c": 1}

        # edge-b runs it and reports its first frames: far more anomalies than version 1 had there.
        t0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
        first = FirstFrames(
            version="2", since=t0.replace(hour=9), frames=200, anomaly_rate=0.3, mean_confidence=0.6, complete=True
        )
        before = FirstFrames(version="1", since=t0, frames=200, anomaly_rate=0.05, mean_confidence=0.8, complete=True)
        agents.status("edge-b", "2", {CLF: SwapBehaviour(current=first, previous=before)})
        wait_for(lambda: api.get(ROLLOUT).json()["flagged_versions"] == ["2"], "version 2 flagged")
        page.reload()
        jump = block.locator('[data-jump="2"]')
        assert "anomaly rate 30% over its first 200 frames, was 5% with v1" in jump.inner_text()
        assert block.locator('[data-rollout-agent="edge-b"] .applied').inner_text().strip() == "2"

        # Widen to edge-c, then promote to all.
        block.get_by_label("version to stage").fill("2")
        block.get_by_label("agents to stage on").fill("edge-c")
        block.get_by_role("button", name="Stage / widen").click()
        page.wait_for_url("**/ui/fleet?site=lot*")
        assert _expected(page) == {"edge-a": "1", "edge-b": "2", "edge-c": "2"}
        assert api.get(ROLLOUT).json()["staged_agents"] == ["edge-b", "edge-c"]
        block.get_by_role("button", name="Promote to all").click()
        page.wait_for_url("**/ui/fleet?site=lot*")
        assert _expected(page) == dict.fromkeys(AGENTS, "2")
        body = api.get(ROLLOUT).json()
        assert (body["production_version"], body["staged_version"]) == (2, None)

        # Roll back: one click, which asks first; dismissing it changes nothing.
        questions: list[str] = []

        def dismiss(dialog: Any) -> None:
            questions.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", dismiss)
        block.get_by_role("button", name="Roll back").click()
        wait_for(lambda: questions, "the confirm dialog")
        assert questions == [f"Roll {CLF} back everywhere?"]
        assert api.get(ROLLOUT).json()["production_version"] == 2

        page.once("dialog", lambda dialog: dialog.accept())
        block.get_by_role("button", name="Roll back").click()
        page.wait_for_url("**/ui/fleet?site=lot*")
        wait_for(lambda: _expected(page) == dict.fromkeys(AGENTS, "1"), "every agent expected back on 1")
        body = api.get(ROLLOUT).json()
        assert (body["production_version"], body["staged_version"]) == (1, None)
        assert _rest_expected(api) == dict.fromkeys(AGENTS, 1)
        page.close()
    finally:
        agents.close()
