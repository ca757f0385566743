"""Staged rollout over three real agent processes, a real hub process and the real Mosquitto: only the chosen agent
switches, then all; a pin holds across the promotion; one-click rollback returns everyone. The promote-to-switch
times (REST call → the agent's status reports the new version) are printed for docs/BENCHMARKS.md."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest

from camfleet_contract.messages import AgentStatus, from_json
from camfleet_contract.signing import fingerprint, load_or_create_key, public_key_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))  # the hub tests' bundle and dataset helpers

from apihelpers import bundle_zip, dataset_zip  # noqa: E402

from camfleet_contract.signing import generate_signing_key  # noqa: E402
from tests.support.polling import unique  # noqa: E402
from tests.support.procs import Procs  # noqa: E402

pytestmark = pytest.mark.e2e

SITE, CLF = "rollout", "clothes"
AGENTS = ("agent-a", "agent-b", "agent-c")
PASSWORD = "rollout-admin-password"
WAIT_S = 120.0


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    p.stop()


class Versions:
    """The model version each agent reports in its retained status, with the time it changed."""

    def __init__(self, host: str, port: int, root: str) -> None:
        self.now: dict[str, str | None] = {}
        self.changed: dict[str, float] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("versions-"))
        self.client.on_message = self._on
        self.client.connect(host, port)
        self.client.subscribe(f"{root}/v1/{SITE}/agents/+/status", qos=1)
        self.client.loop_start()

    def _on(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            status = from_json(AgentStatus, msg.payload)
        except ValueError:
            return
        version = status.models.get(CLF)
        with self.lock:
            if self.now.get(status.agent) != version:
                self.now[status.agent] = version
                self.changed[status.agent] = time.monotonic()

    def snapshot(self) -> dict[str, str | None]:
        with self.lock:
            return dict(self.now)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _wait(what: str, check: Callable[[], object], procs: Procs) -> object:
    return procs.wait_for(what, check, WAIT_S, interval=0.05)


def test_staged_rollout_on_three_agents(tmp_path, procs, mosquitto, clothing_subset, free_port) -> None:  # type: ignore[no-untyped-def]
    port, root = free_port(), unique("ro")
    hub_url = f"http://127.0.0.1:{port}"
    (tmp_path / "hub.toml").write_text(
        f'data_dir = "{tmp_path / "hub"}"\n[http]\nport = {port}\n'
        f'[mqtt]\nembedded = false\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\nroot = "{root}"\n'
        f'client_id = "{unique("hub-")}"\n[db]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n'
        f'[auth]\nadmin_password = "{PASSWORD}"\n'
    )
    procs.start("hub", "camfleet_hub", "serve", "--config", str(tmp_path / "hub.toml"))
    api = httpx.Client(base_url=hub_url, timeout=60)

    def up() -> bool:
        try:
            return api.get("/api/v1/health").status_code == 200
        except httpx.TransportError:
            return False

    _wait("the hub", up, procs)
    login = api.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    api.headers["X-CSRF-Token"] = login.headers["x-csrf-token"]
    assert api.post("/api/v1/sites", json={"name": SITE}).status_code == 201
    tokens = {}
    for name, site in (("script", None), ("agents", SITE)):
        r = api.post("/api/v1/tokens", json={"name": name, "site": site, "role": "admin" if site is None else "viewer"})
        assert r.status_code == 201, r.text
        tokens[name] = r.json()["token"]
    api.headers["Authorization"] = f"Bearer {tokens['script']}"
    api.cookies.clear()
    del api.headers["X-CSRF-Token"]
    assert api.post(f"/api/v1/sites/{SITE}/classifiers", json={"name": CLF}).status_code == 201
    clf = f"/api/v1/sites/{SITE}/classifiers/{CLF}"
    data = dataset_zip(clothing_subset / "train", 2)
    assert api.post(f"{clf}/import?wait=true", files={"file": ("d.zip", data, "application/zip")}).status_code == 200
    key = generate_signing_key()
    ids = []
    for seed in range(3):
        job = api.post(f"{clf}/jobs", json={}).json()["id"]
        assert api.post("/api/v1/jobs/claim", json={"worker": "t"}).json()["job"]["id"] == job
        bundle = bundle_zip(tmp_path, key, model_seed=seed)
        r = api.post(f"/api/v1/jobs/{job}/result", files={"file": ("b.zip", bundle, "application/zip")})
        assert r.status_code in (200, 201), r.text
        ids.append(r.json()["id"])
    assert api.post(f"/api/v1/models/{ids[0]}/promote").status_code == 200

    versions = Versions(mosquitto.host, mosquitto.port, root)
    fleet_sha = fingerprint(public_key_of(load_or_create_key(tmp_path / "hub" / "fleet.key")))
    for agent in AGENTS:
        (tmp_path / f"{agent}.toml").write_text(
            f'agent = "{agent}"\nsite = "{SITE}"\nhub_url = "{hub_url}"\ndata_dir = "{tmp_path / agent}"\n'
            f'api_token = "{tokens["agents"]}"\nstatus_interval_s = 5\n'
            f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\nroot = "{root}"\n'
            f'[models]\nfleet_key_sha256 = "{fleet_sha}"\n[health]\nport = 0\n'
        )
        procs.start(agent, "camfleet_agent", "run", "--config", str(tmp_path / f"{agent}.toml"))
    try:
        _wait("every agent on version 1", lambda: versions.snapshot() == dict.fromkeys(AGENTS, "1"), procs)
        timings: dict[str, float] = {}

        def step(name: str, call: Callable[[], httpx.Response], expect: dict[str, str]) -> None:
            start = time.monotonic()
            r = call()
            assert r.status_code == 200, r.text
            _wait(f"{name}: {expect}", lambda: versions.snapshot() == expect, procs)
            changed = [versions.changed[a] for a in AGENTS if versions.changed[a] >= start]
            timings[name] = max(changed) - start if changed else 0.0

        rollout = f"{clf}/rollout"
        step(
            "stage v2 on agent-b",
            lambda: api.post(f"{rollout}/stage", json={"version": 2, "agents": ["agent-b"]}),
            {"agent-a": "1", "agent-b": "2", "agent-c": "1"},
        )
        assert api.put(f"{rollout}/pins/agent-c", json={"version": 1}).status_code == 200
        step(
            "promote v2 to all (agent-c pinned)",
            lambda: api.post(f"{rollout}/promote", json={}),
            {"agent-a": "2", "agent-b": "2", "agent-c": "1"},
        )
        assert api.delete(f"{rollout}/pins/agent-c").status_code == 200
        _wait("agent-c on version 2 once unpinned", lambda: versions.snapshot()["agent-c"] == "2", procs)
        step(
            "stage v3 on agent-a",
            lambda: api.post(f"{rollout}/stage", json={"version": 3, "agents": ["agent-a"]}),
            {"agent-a": "3", "agent-b": "2", "agent-c": "2"},
        )
        step("rollback (staged v3 withdrawn)", lambda: api.post(f"{rollout}/rollback"), dict.fromkeys(AGENTS, "2"))
        step("rollback (production to v1)", lambda: api.post(f"{rollout}/rollback"), dict.fromkeys(AGENTS, "1"))
        _wait(
            "the hub's rollout view showing version 1 applied everywhere",
            lambda: (
                {a["agent"]: a["applied_version"] for a in api.get(rollout).json()["agents"]}
                == dict.fromkeys(AGENTS, "1")
            ),
            procs,
        )
        print("\npromote-to-switch seconds:", {k: round(v, 2) for k, v in timings.items()})
    finally:
        versions.stop()
