"""Staged model rollout over REST, checked on the retained announcement the agents read: named agents first, then a
share, widen, promote to all; a pin holds across a promote; one-click rollback (staged or production) with the
signed rollback statements agents need; per-agent expected and applied versions and refusals."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fleethelpers import API, FleetHub, token_for, unique, wait_for

from camfleet_contract.messages import AgentStatus, ModelAnnouncement, from_json, to_json
from camfleet_contract.rollback import verify_rollback
from camfleet_contract.signing import generate_signing_key, public_key_of
from camfleet_hub.auth.models import Role
from camfleet_hub.core.comms.mqtt import MqttClient, Received
from camfleet_hub.fleet.rollout import in_share

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))  # the hub tests' bundle and dataset helpers

from apihelpers import bundle_zip, import_dataset  # noqa: E402

CLF = f"{API}/sites/shop/classifiers/clothes"
ROLLOUT = f"{CLF}/rollout"
AGENTS = ("agent1", "agent2", "agent3")


def _models(fleet: FleetHub, clothing: Path, tmp: Path, n: int) -> list[int]:
    """``n`` registered versions (1..n) of classifier 'clothes'; returns their ids."""
    c = fleet.client
    import_dataset(c, clothing, per_class=2)
    key = generate_signing_key()
    ids = []
    for seed in range(n):
        job = c.post(f"{CLF}/jobs", json={}).json()["id"]
        assert c.post(f"{API}/jobs/claim", json={"worker": "t"}).json()["job"]["id"] == job
        data = bundle_zip(tmp, key, model_seed=seed)
        r = c.post(f"{API}/jobs/{job}/result", files={"file": ("b.zip", data, "application/zip")})
        assert r.status_code in (200, 201), r.text
        ids.append(int(r.json()["id"]))
    return ids


class Announcements:
    """The retained announcement of 'clothes', as a subscribing agent sees it (latest wins)."""

    def __init__(self, fleet: FleetHub) -> None:
        self.got: list[Received] = []
        self.client = MqttClient(fleet.mosquitto.host, fleet.mosquitto.port, unique("ann-"))
        self.client.subscribe(fleet.topics.model("shop", "clothes"), self.got.append, qos=1)
        assert self.client.start(30)

    def latest(self, pred: Any, what: str) -> ModelAnnouncement:
        def check() -> ModelAnnouncement | None:
            if not self.got:
                return None
            ann = from_json(ModelAnnouncement, self.got[-1].payload)
            return ann if pred(ann) else None

        return wait_for(check, what)  # type: ignore[no-any-return]


def _status(fleet: FleetHub, agent: str, **fields: Any) -> None:
    status = AgentStatus(state="online", agent=agent, site="shop", **fields)
    fleet.publish(fleet.topics.status("shop", agent), to_json(status), retain=True)


def test_staged_rollout_pin_promote_rollback(sqlite_fleet: FleetHub, clothing_subset: Path, tmp_path: Path) -> None:
    fleet, c = sqlite_fleet, sqlite_fleet.client
    v1, v2, v3 = _models(fleet, clothing_subset, tmp_path, 3)
    for agent in AGENTS:
        _status(fleet, agent)
    wait_for(lambda: len(c.get(ROLLOUT).json()["agents"]) == 3, "three agents known")
    assert c.post(f"{API}/models/{v1}/promote").status_code == 200
    ann = Announcements(fleet)
    public = public_key_of(fleet.services.fleet_signing_key)
    try:
        ann.latest(lambda a: a.version == "1", "version 1 announced")

        # Stage version 2 on agent2 only.
        r = c.post(f"{ROLLOUT}/stage", json={"version": 2, "agents": ["agent2"]})
        assert r.status_code == 200, r.text
        a = ann.latest(lambda a: "agent2" in a.agents, "the staged plan")
        assert a.version == "1" and set(a.agents) == {"agent2"}
        assert a.for_agent("agent2").version == "2" and a.for_agent("agent1").version == "1"
        assert a.for_agent("agent2").agents == {}
        view = c.get(ROLLOUT).json()
        assert view["staged_version"] == 2 and view["staged_agents"] == ["agent2"]
        assert {x["agent"]: x["expected_version"] for x in view["agents"]} == {"agent1": 1, "agent2": 2, "agent3": 1}

        # Pin agent3 to version 1, then promote version 2 to all: the pin holds, with a signed rollback for it.
        assert c.put(f"{ROLLOUT}/pins/agent3", json={"version": 1}).status_code == 200
        r = c.post(f"{ROLLOUT}/promote", json={})
        assert r.status_code == 200 and r.json()["production_version"] == 2 and r.json()["staged_version"] is None
        a = ann.latest(lambda a: a.version == "2", "version 2 to all")
        assert set(a.agents) == {"agent3"}
        pinned = a.for_agent("agent3")
        assert pinned.version == "1" and pinned.rollback is not None and pinned.rollback.replaces == "2"
        verify_rollback(pinned.rollback, public)
        assert a.for_agent("agent1").version == "2" and a.for_agent("agent1").rollback is None

        # Stage version 3 on agent1, then roll back in one click: the staged version is withdrawn (signed).
        c.post(f"{ROLLOUT}/stage", json={"version": 3, "agents": ["agent1"]})
        ann.latest(lambda a: a.for_agent("agent1").version == "3", "version 3 staged on agent1")
        r = c.post(f"{ROLLOUT}/rollback")
        assert r.status_code == 200 and r.json()["staged_version"] is None and r.json()["production_version"] == 2
        a = ann.latest(lambda a: a.version == "2" and "agent1" not in a.agents, "the staged version withdrawn")
        assert a.rollback is not None and a.rollback.version == "2" and a.rollback.replaces == "3"
        verify_rollback(a.rollback, public)

        # Rollback again: production goes back to version 1 everywhere (agent3 stays pinned on it).
        r = c.post(f"{ROLLOUT}/rollback")
        assert r.status_code == 200 and r.json()["production_version"] == 1
        a = ann.latest(lambda a: a.version == "1", "production rolled back to 1")
        assert a.rollback is not None and int(a.rollback.replaces) >= 3 and a.agents == {}
        assert c.get(ROLLOUT).json()["pins"] == {"agent3": 1}
        assert c.delete(f"{ROLLOUT}/pins/agent3").status_code == 200
        assert c.delete(f"{ROLLOUT}/pins/agent3").status_code == 404
    finally:
        ann.client.stop()


def test_share_widen_and_refusals(sqlite_fleet: FleetHub, clothing_subset: Path, tmp_path: Path) -> None:
    fleet, c = sqlite_fleet, sqlite_fleet.client
    v1, _v2 = _models(fleet, clothing_subset, tmp_path, 2)
    agents = [f"cam-agent-{i}" for i in range(12)]
    for agent in agents:
        _status(fleet, agent)
    wait_for(lambda: len(c.get(ROLLOUT).json()["agents"]) == 12, "twelve agents known")
    c.post(f"{API}/models/{v1}/promote")
    ann = Announcements(fleet)
    try:
        c.post(f"{ROLLOUT}/stage", json={"version": 2, "percent": 50})
        chosen = {a for a in agents if in_share("clothes", a, 50)}
        assert 0 < len(chosen) < 12  # a real split, stable by hash
        a = ann.latest(lambda a: bool(a.agents), "the 50 % plan")
        assert set(a.agents) == chosen
        c.post(f"{ROLLOUT}/stage", json={"version": 2, "percent": 10})  # widening never narrows
        assert c.get(ROLLOUT).json()["percent"] == 50
        r = c.post(f"{ROLLOUT}/stage", json={"version": 2, "percent": 100})
        assert r.json()["production_version"] == 2 and r.json()["staged_version"] is None
        ann.latest(lambda a: a.version == "2" and not a.agents, "version 2 to all")
    finally:
        ann.client.stop()

    assert c.post(f"{ROLLOUT}/stage", json={"version": 1, "agents": ["x"]}).status_code == 409  # not newer
    assert c.post(f"{ROLLOUT}/stage", json={"version": 9, "agents": ["x"]}).status_code == 404
    bad = c.post(f"{ROLLOUT}/stage", json={"version": 2, "agents": ["no way"]})
    assert bad.status_code == 422 and "agents" in bad.text
    assert c.post(f"{ROLLOUT}/promote", json={}).status_code == 409  # nothing staged
    viewer = {"Authorization": f"Bearer {token_for(fleet.services, 'shop', Role.VIEWER)}"}
    assert c.post(f"{ROLLOUT}/rollback", headers=viewer).status_code == 403
    assert c.get(ROLLOUT, headers=viewer).status_code == 200

    # What each agent reports: applied version and its refusals for this classifier.
    _status(fleet, "cam-agent-0", models={"clothes": "1"}, problems=["model clothes/2 refused: bad signature"])
    wait_for(
        lambda: next(x for x in c.get(ROLLOUT).json()["agents"] if x["agent"] == "cam-agent-0")["problems"],
        "the refusal shown",
    )
    row = next(x for x in c.get(ROLLOUT).json()["agents"] if x["agent"] == "cam-agent-0")
    assert row["applied_version"] == "1" and row["expected_version"] == 2


def test_rollout_from_the_fleet_page(sqlite_fleet: FleetHub, clothing_subset: Path, tmp_path: Path) -> None:
    fleet, c = sqlite_fleet, sqlite_fleet.client
    v1, _v2 = _models(fleet, clothing_subset, tmp_path, 2)
    for agent in AGENTS:
        _status(fleet, agent)
    wait_for(lambda: len(c.get(ROLLOUT).json()["agents"]) == 3, "three agents known")
    c.post(f"{API}/models/{v1}/promote")
    form = "/ui/fleet/sites/shop/classifiers/clothes/rollout"
    r = c.post(form, data={"action": "stage", "version": "2", "agents": "agent2"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    page = c.get("/ui/fleet").text
    assert (
        'staged <span class="badge candidate">2</span> on' in page
        and "agent2" in page.split("staged <span", 1)[1][:120]
    )
    assert c.get(ROLLOUT).json()["staged_agents"] == ["agent2"]
    assert c.post(form, data={"action": "promote"}, follow_redirects=False).status_code == 303
    assert c.get(ROLLOUT).json()["production_version"] == 2
    assert c.post(form, data={"action": "rollback"}, follow_redirects=False).status_code == 303
    assert c.get(ROLLOUT).json()["production_version"] == 1
    bad = c.post(form, data={"action": "stage", "version": "x", "agents": "agent2"})
    assert bad.status_code == 422 and "version=&#39;x&#39;" in bad.text
    older = c.post(form, data={"action": "stage", "version": "1", "agents": "agent2"})
    assert older.status_code == 409 and "not above the production version" in older.text
