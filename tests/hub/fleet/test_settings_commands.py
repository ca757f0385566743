"""Agent settings: stored with a version per change, delivered retained and signed by the fleet key (accepted by
the agent's own verifier, refused when tampered), applied version shown from the status; commands with replies."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fleethelpers import API, FleetHub, token_for, unique, wait_for

from camfleet_agent.remote_config import RemoteConfig
from camfleet_contract.agent_config import MAX_AGENT_CAMERAS, AgentConfig
from camfleet_contract.messages import (
    MAX_MESSAGE_BYTES,
    MAX_SIGNED_CONFIG_CHARS,
    AgentConfigDocument,
    AgentStatus,
    Command,
    CommandReply,
    SignedConfig,
    from_json,
    to_json,
)
from camfleet_contract.signing import public_key_of, verify
from camfleet_hub.auth.models import Role
from camfleet_hub.core.comms.mqtt import MqttClient, Received

CAMERA = {
    "name": "cam1",
    "source": "rtsp://10.0.0.5/stream1",
    "classifiers": [{"classifier": "door", "region": {"rect": [0.1, 0.2, 0.5, 0.9]}}, {"classifier": "lights"}],
    "gate": {"sensitivity": 0.7, "mask": [[[0.0, 0.0], [1.0, 0.0], [1.0, 0.1]]]},
    "uploads": [{"rule": "low_confidence", "below": 0.6, "hourly_cap": 20}],
}


def _listen(fleet: FleetHub, topic: str) -> tuple[MqttClient, list[Received]]:
    got: list[Received] = []
    client = MqttClient(fleet.mosquitto.host, fleet.mosquitto.port, unique("sub-"))
    client.subscribe(topic, got.append, qos=1)
    assert client.start(30)
    return client, got


def test_settings_versions_signed_delivery_and_applied(fleet: FleetHub, tmp_path: Path) -> None:
    fleet.site()
    url = f"{API}/sites/shop/agents/agent1/config"
    assert fleet.client.get(url).status_code == 404
    r = fleet.client.put(url, json={"cameras": [CAMERA]})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["applied_version"] is None
    second = {**CAMERA, "gate": {"sensitivity": 0.3}}
    assert fleet.client.put(url, json={"cameras": [second]}).json()["version"] == 2
    history = fleet.client.get(f"{url}/history").json()
    assert [h["version"] for h in history] == [2, 1]
    assert history[1]["cameras"][0]["classifiers"][0]["region"]["rect"] == [0.1, 0.2, 0.5, 0.9]

    # What a fresh agent finds retained: version 2, signed by the hub's fleet key, addressed to shop/agent1.
    sub, got = _listen(fleet, fleet.topics.config("shop", "agent1"))
    try:
        wait_for(lambda: got, "the retained settings")
    finally:
        sub.stop()
    assert got[0].retain
    signed = from_json(SignedConfig, got[0].payload)
    public = public_key_of(fleet.services.fleet_signing_key)
    verify(signed.config.encode(), signed.signature, public)
    doc = from_json(AgentConfigDocument, signed.config)
    assert (doc.site, doc.agent, doc.config.version) == ("shop", "agent1", 2)
    assert doc.config.cameras[0].gate.sensitivity == 0.3

    # The agent's own verifier accepts it; a tampered copy and one for another agent are refused.
    applied: list[AgentConfig] = []
    agent = RemoteConfig(tmp_path / "a1", "shop", "agent1", lambda: public, applied.append)
    assert agent.submit(got[0].payload) and applied[-1].version == 2
    other = RemoteConfig(tmp_path / "a2", "shop", "agent2", lambda: public, applied.append)
    assert not other.submit(got[0].payload) and "not this agent" in (other.last_error or "")
    forged = SignedConfig(
        config=signed.config.replace('"sensitivity":0.3', '"sensitivity":0.9'), signature=signed.signature
    )
    fresh = RemoteConfig(tmp_path / "a3", "shop", "agent1", lambda: public, applied.append)
    assert not fresh.submit(to_json(forged)) and "signature" in (fresh.last_error or "")

    # The agent reports the version it runs; the hub shows it.
    status = AgentStatus(state="online", agent="agent1", site="shop", cameras=["cam1"], config_version=2)
    fleet.publish(fleet.topics.status("shop", "agent1"), to_json(status), retain=True)
    wait_for(lambda: fleet.client.get(url).json()["applied_version"] == 2, "the applied version shown")


def test_settings_refusals(sqlite_fleet: FleetHub) -> None:
    fleet = sqlite_fleet
    fleet.site()
    url = f"{API}/sites/shop/agents/agent1/config"
    twice = {"cameras": [CAMERA, CAMERA]}
    r = fleet.client.put(url, json=twice)
    assert r.status_code == 422 and "cam1" in r.text
    bad_region = {
        "cameras": [{**CAMERA, "classifiers": [{"classifier": "door", "region": {"rect": [0.5, 0.2, 0.1, 0.9]}}]}]
    }
    r = fleet.client.put(url, json=bad_region)
    assert r.status_code == 422 and "rect" in r.text
    r = fleet.client.put(f"{API}/sites/shop/agents/bad%20name/config", json={"cameras": []})
    assert r.status_code == 422 and "agent" in r.text
    labeller = {"Authorization": f"Bearer {token_for(fleet.services, 'shop', Role.LABELLER)}"}
    assert fleet.client.put(url, json={"cameras": [CAMERA]}, headers=labeller).status_code == 403
    assert fleet.client.get(f"{url}/history").json() == []


def test_settings_camera_bound_is_the_contracts(sqlite_fleet: FleetHub) -> None:
    """The REST route takes as many cameras as the agent's settings may hold (MAX_AGENT_CAMERAS), and no more."""
    fleet = sqlite_fleet
    fleet.site()
    url = f"{API}/sites/shop/agents/agent1/config"
    cameras = [{"name": f"cam{i}", "source": f"rtsp://10.0.0.5/{i}"} for i in range(MAX_AGENT_CAMERAS + 1)]
    r = fleet.client.put(url, json={"cameras": cameras})
    assert r.status_code == 422 and "cameras" in r.text
    r = fleet.client.put(url, json={"cameras": cameras[:MAX_AGENT_CAMERAS]})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and len(r.json()["cameras"]) == MAX_AGENT_CAMERAS


def _masked_cameras(count: int, polygons: int, points: int) -> list[dict[str, Any]]:
    """``count`` cameras, each with a gate mask of ``polygons`` polygons of ``points`` random points."""
    rng = random.Random(7)
    mask = [[[round(rng.random(), 6), round(rng.random(), 6)] for _ in range(points)] for _ in range(polygons)]
    return [{"name": f"cam{i}", "source": f"rtsp://10.0.0.5/{i}", "gate": {"mask": mask}} for i in range(count)]


@pytest.mark.parametrize(
    ("cameras", "limit"),
    [
        # 200 cameras, each masking two 16-point polygons: ~173 000 characters of settings text
        (_masked_cameras(200, 2, 16), f"over the limit of {MAX_SIGNED_CONFIG_CHARS}"),
        # fewer characters than the limit, but sources of 3-byte characters make the message ~300 KB (each source
        # within MAX_SOURCE_CHARS, so it is the message's size that is refused)
        (
            [{"name": f"cam{i}", "source": "rtsp://10.0.0.5/" + "\u20ac" * 2000} for i in range(50)],
            f"over the limit of {MAX_MESSAGE_BYTES}",
        ),
    ],
    ids=["masks-over-text-limit", "non-ascii-over-message-limit"],
)
def test_settings_too_big_to_deliver_are_refused_and_nothing_stored(
    sqlite_fleet: FleetHub, cameras: list[dict[str, Any]], limit: str
) -> None:
    """Settings whose signed message the agent could not read get a 422 naming the field and the limit, before any
    version is stored; the next save is version 2. Before, the text over the limit stored its version and then failed
    signing with a 500, and the non-ASCII message was stored and published although the agent refuses it."""
    fleet = sqlite_fleet
    fleet.site()
    url = f"{API}/sites/shop/agents/agent1/config"
    assert fleet.client.put(url, json={"cameras": [CAMERA]}).json()["version"] == 1
    client = TestClient(fleet.client.app, headers=fleet.client.headers, raise_server_exceptions=False)  # a 500 shows

    r = client.put(url, json={"cameras": cameras})
    assert r.status_code == 422, r.text[:500]
    detail = r.json()["detail"]
    assert detail.startswith("cameras: the settings") and "agent 'agent1'" in detail and limit in detail, detail
    assert [h["version"] for h in client.get(f"{url}/history").json()] == [1]
    assert client.get(url).json()["version"] == 1

    # The hub goes on serving: a normal save is version 2, delivered retained as before.
    r = client.put(url, json={"cameras": [{**CAMERA, "gate": {"sensitivity": 0.3}}]})
    assert r.status_code == 200 and r.json()["version"] == 2, r.text[:500]
    sub, got = _listen(fleet, fleet.topics.config("shop", "agent1"))
    try:
        wait_for(lambda: got, "the retained settings")
    finally:
        sub.stop()
    doc = from_json(AgentConfigDocument, from_json(SignedConfig, got[0].payload).config)
    assert doc.config.version == 2 and doc.config.cameras[0].gate.sensitivity == 0.3


def test_commands_and_replies(sqlite_fleet: FleetHub) -> None:
    fleet = sqlite_fleet
    fleet.site()
    inbox: list[Received] = []
    fleet.agent.subscribe(fleet.topics.cmd("shop", "agent1"), inbox.append, qos=1)
    wait_for(lambda: fleet.agent.subscribed.is_set(), "the agent's command subscription")
    base = f"{API}/sites/shop/agents/agent1/commands"
    r = fleet.client.post(base, json={"command": "snapshot", "camera": "cam1"})
    assert r.status_code == 202, r.text
    sent = r.json()
    assert sent["result"] is None
    wait_for(lambda: inbox, "the command on the agent's topic")
    command = from_json(Command, inbox[0].payload)
    assert (command.command_id, command.command, command.camera) == (sent["command_id"], "snapshot", "cam1")

    reply = CommandReply(
        command_id=command.command_id, command="snapshot", agent="agent1", result="ok", message="1 frame"
    )
    fleet.publish(fleet.topics.reply("shop", "agent1"), to_json(reply))
    one = f"{API}/sites/shop/commands/{sent['command_id']}"
    wait_for(lambda: fleet.client.get(one).json()["result"] == "ok", "the reply recorded")
    assert fleet.client.get(one).json()["message"] == "1 frame"
    # Another agent cannot answer for agent1's command.
    r2 = fleet.client.post(base, json={"command": "reload"}).json()
    spoof = CommandReply(command_id=r2["command_id"], command="reload", agent="agent2", result="error", message="x")
    fleet.publish(fleet.topics.reply("shop", "agent2"), to_json(spoof))
    ok = CommandReply(
        command_id=r2["command_id"], command="reload", agent="agent1", result="error", message="no settings"
    )
    fleet.publish(fleet.topics.reply("shop", "agent1"), to_json(ok))
    wait_for(lambda: fleet.client.get(f"{API}/sites/shop/commands/{r2['command_id']}").json()["result"], "reply 2")
    assert fleet.client.get(f"{API}/sites/shop/commands/{r2['command_id']}").json()["message"] == "no settings"
    assert [c["command"] for c in fleet.client.get(base).json()] == ["reload", "snapshot"]

    r = fleet.client.post(base, json={"command": "restart"})
    assert r.status_code == 422 and "camera" in r.json()["detail"]
    r = fleet.client.post(base, json={"command": "format-disk"})
    assert r.status_code == 422 and "command" in r.text
    assert fleet.client.get(f"{API}/sites/shop/commands/nope").status_code == 404


def test_settings_make_the_agent_own_its_cameras(sqlite_fleet: FleetHub) -> None:
    """Saving an agent's settings makes it the owner of the cameras they name, so a stolen login of another agent of
    the site can no longer claim a configured camera by naming it first in a status; trust on first use is left to
    cameras nobody configured. Another agent's camera is refused (409, nothing stored) until it is released."""
    fleet = sqlite_fleet
    fleet.site()  # cam1, created by hand: unowned
    cameras = f"{API}/sites/shop/cameras"

    def owners() -> dict[str, str | None]:
        return {c["name"]: c["agent"] for c in fleet.client.get(cameras).json()}

    url1, url2 = (f"{API}/sites/shop/agents/{a}/config" for a in ("agent1", "agent2"))
    new = {"name": "cam2", "source": "rtsp://10.0.0.5/2"}
    assert fleet.client.put(url1, json={"cameras": [CAMERA, new]}).status_code == 200
    assert owners() == {"cam1": "agent1", "cam2": "agent1"}  # cam2 registered by the settings

    # an attacker with agent "evil"'s login names both cameras and a third one in its status
    status = AgentStatus(state="online", agent="evil", site="shop", cameras=["cam1", "cam2", "cam3"])
    fleet.publish(fleet.topics.status("shop", "evil"), to_json(status), retain=True)
    wait_for(lambda: "cam3" in owners(), "the status stored")
    assert owners() == {"cam1": "agent1", "cam2": "agent1", "cam3": "evil"}

    r = fleet.client.put(url2, json={"cameras": [CAMERA]})
    assert r.status_code == 409 and "camera 'cam1' belongs to agent 'agent1'" in r.json()["detail"], r.text
    assert fleet.client.get(f"{url2}/history").json() == []  # nothing stored
    assert fleet.client.put(url2, json={"cameras": [{**CAMERA, "name": "models"}]}).status_code == 422  # reserved
    assert fleet.client.patch(f"{cameras}/cam1", json={"agent": None}).status_code == 200  # a site admin releases it
    assert fleet.client.put(url2, json={"cameras": [CAMERA]}).status_code == 200
    assert owners()["cam1"] == "agent2"
