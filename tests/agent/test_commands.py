"""Commands and hub-signed settings, end to end against a real Mosquitto and a whole Agent.

Every command is answered on the reply topic; hostile payloads get an error reply and the agent goes on.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from mqttkit import mqtt_publish

from camfleet_agent.app import Agent
from camfleet_agent.config import AgentSettings, CameraSettings, HealthSettings, MqttSettings
from camfleet_agent.remote_config import CONFIG_FILE
from camfleet_contract.agent_config import AgentConfig, CameraConfig, ClassifierBinding, UploadRule
from camfleet_contract.envelope import decode_frame
from camfleet_contract.messages import (
    AgentConfigDocument,
    AgentStatus,
    Command,
    CommandReply,
    SignedConfig,
    from_json,
    to_json,
    utcnow,
)
from camfleet_contract.signing import generate_signing_key, sign
from camfleet_contract.topics import Topics

AGENT = "edge-cmd"
TOPICS = Topics()


@pytest.fixture
def settings(mosquitto, static_hub, fleet_public: str, image_folder: Path, tmp_path: Path) -> AgentSettings:  # type: ignore[no-untyped-def]
    static_hub.set_fleet_key(fleet_public)
    return AgentSettings(
        agent=AGENT,
        site=f"s{uuid.uuid4().hex[:8]}",
        hub_url=static_hub.url,
        data_dir=tmp_path / "agent",
        fleet_public_key=fleet_public,
        status_interval_s=60,
        health=HealthSettings(port=0),
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port, keepalive=10),
        cameras=[
            CameraSettings(name="door", source=str(image_folder), fps=4, upload_interval_s=0),
            CameraSettings(name="yard", source=str(image_folder), fps=4, upload_interval_s=0),
        ],
    )


@pytest.fixture
def agent(settings: AgentSettings):  # type: ignore[no-untyped-def]
    a = Agent(settings)
    a.start()
    assert a.mqtt is not None and a.mqtt.wait_connected(30)
    try:
        yield a
    finally:
        a.stop()


def send(mosquitto, settings: AgentSettings, payload: bytes) -> None:  # type: ignore[no-untyped-def]
    mqtt_publish(mosquitto.host, mosquitto.port, TOPICS.cmd(settings.site, settings.agent), payload)


def reply_to(command_id: str | None):  # type: ignore[no-untyped-def]
    def check(msg) -> bool:  # type: ignore[no-untyped-def]
        return msg.topic.endswith("/reply") and from_json(CommandReply, msg.payload).command_id == command_id

    return check


def test_snapshot_uploads_the_current_frame_with_rule_request(mosquitto, settings, agent, collector) -> None:  # type: ignore[no-untyped-def]
    seen = collector(f"camfleet/v1/{settings.site}/#")
    cmd = Command(command="snapshot", camera="yard")
    send(mosquitto, settings, to_json(cmd))
    reply = from_json(CommandReply, seen.wait_for(reply_to(cmd.command_id), "the snapshot reply").payload)
    assert (reply.result, reply.command, reply.agent) == ("ok", "snapshot", AGENT) and "yard" in reply.message
    msg = seen.wait_for(lambda m: m.topic.endswith("/frame"), "the snapshot frame")
    header, _jpeg = decode_frame(msg.payload)
    assert msg.topic == TOPICS.frame(settings.site, "yard")
    assert (header.rule, header.reason, header.camera) == ("request", "request", "yard")
    assert not any(m.topic.endswith("/door/frame") for m in seen.seen)  # no rule uploads the other camera


def test_restart_a_camera_and_refusals_naming_what_is_wrong(mosquitto, settings, agent, collector) -> None:  # type: ignore[no-untyped-def]
    seen = collector(f"camfleet/v1/{settings.site}/agents/{AGENT}/reply")
    before = agent.pipelines["door"]
    ok = Command(command="restart", camera="door")
    send(mosquitto, settings, to_json(ok))
    reply = from_json(CommandReply, seen.wait_for(reply_to(ok.command_id), "the restart reply").payload)
    assert reply.result == "ok" and agent.pipelines["door"] is not before

    for cmd, needle in [
        (Command(command="restart"), "camera is required"),
        (Command(command="restart", camera="garage"), "garage"),
        (Command(command="snapshot", camera="garage"), "garage"),
    ]:
        send(mosquitto, settings, to_json(cmd))
        reply = from_json(CommandReply, seen.wait_for(reply_to(cmd.command_id), f"reply to {cmd}").payload)
        assert reply.result == "error" and needle in reply.message


@pytest.mark.parametrize(
    ("payload", "command_id", "needle"),
    [
        (b"not json", None, "Command"),
        (b'{"command_id": "c1", "command": "format_disk"}', "c1", "command"),
        (b'{"command_id": "c2", "command": "snapshot", "camera": "../../etc"}', "c2", "camera"),
        (b'{"command_id": "c3", "command": "snapshot", "extra": 1}', "c3", "extra"),
        (b'{"command_id": "c4", "command": "restart", "camera": 7}', "c4", "camera"),
        (b"[]", None, "Command"),
        (b'{"command_id": "' + b"x" * 300_000 + b'"}', None, "exceeds"),
    ],
)
def test_hostile_commands_get_an_error_reply_and_the_agent_goes_on(  # type: ignore[no-untyped-def]
    mosquitto, settings, agent, collector, payload: bytes, command_id: str | None, needle: str
) -> None:
    seen = collector(f"camfleet/v1/{settings.site}/agents/{AGENT}/reply")
    send(mosquitto, settings, payload)
    reply = from_json(CommandReply, seen.wait_for(reply_to(command_id), "the error reply").payload)
    assert reply.result == "error" and needle in reply.message
    after = Command(command="config")
    send(mosquitto, settings, to_json(after))
    assert from_json(CommandReply, seen.wait_for(reply_to(after.command_id), "a later reply").payload).result == "ok"


def test_a_command_from_a_skewed_clock_runs_and_is_reported(mosquitto, settings, agent, collector) -> None:  # type: ignore[no-untyped-def]
    seen = collector(f"camfleet/v1/{settings.site}/agents/{AGENT}/reply")
    cmd = Command(command="config", ts=utcnow() + timedelta(hours=1))  # the hub's clock is an hour ahead
    send(mosquitto, settings, to_json(cmd))
    assert from_json(CommandReply, seen.wait_for(reply_to(cmd.command_id), "the reply").payload).result == "ok"
    status = agent.status()
    assert any(p.startswith("clock skew") and "-3600" in p for p in status.problems), status.problems
    line = [
        x for x in agent.metrics.render().decode().splitlines() if x.startswith("camfleet_agent_clock_skew_seconds ")
    ]
    assert len(line) == 1 and float(line[0].split()[1]) < -3500


def signed(seed: str, site: str, config: AgentConfig, agent: str = AGENT) -> bytes:
    text = to_json(AgentConfigDocument(site=site, agent=agent, config=config)).decode()
    return to_json(SignedConfig(config=text, signature=sign(text.encode(), seed)))


def test_signed_settings_are_applied_persisted_and_reported(  # type: ignore[no-untyped-def]
    mosquitto, settings, fleet_seed: str, image_folder: Path, collector
) -> None:
    topic = TOPICS.config(settings.site, AGENT)
    config = AgentConfig(
        version=3,
        cameras=[
            CameraConfig(
                name="door",
                source=str(image_folder),
                fps=4,
                classifiers=[ClassifierBinding(classifier="nosuch")],
                uploads=[UploadRule(rule="sample", every_n=1, hourly_cap=2)],
            )
        ],
    )
    statuses = collector(TOPICS.status(settings.site, AGENT))
    frames = collector(f"camfleet/v1/{settings.site}/+/frame")
    mqtt_publish(mosquitto.host, mosquitto.port, topic, signed(fleet_seed, settings.site, config), retain=True)
    agent = Agent(settings)
    agent.start()
    try:
        statuses.wait_for(
            lambda m: m.payload and from_json(AgentStatus, m.payload).config_version == 3, "status with version 3"
        )
        # the hub's rule: every frame, at most 2 an hour
        frame = frames.wait_for(lambda m: True, "a frame sent by the hub's sample rule")
        assert decode_frame(frame.payload)[0].rule == "sample"
        door = agent.pipelines["door"]
        deadline = time.monotonic() + 60
        while door.processed < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert door.uploads.sent == {"sample": 2} and door.uploads.capped["sample"] >= 10 - 2 - 1
        status = agent.status()
        assert any("'nosuch' is unknown" in p for p in status.problems), status.problems
        assert (settings.data_dir / CONFIG_FILE).exists()

        # refused: another key, another agent's settings, an older version; none changes what runs
        for bad, why in [
            (signed(generate_signing_key(), settings.site, config.model_copy(update={"version": 9})), "signature"),
            (signed(fleet_seed, settings.site, config.model_copy(update={"version": 9}), agent="other"), "other"),
            (signed(fleet_seed, settings.site, config.model_copy(update={"version": 2})), "not newer"),
            (b'{"config": "{}", "signature": "00"}', "signature"),
        ]:
            refused = agent.remote.refused
            mqtt_publish(mosquitto.host, mosquitto.port, topic, bad, retain=True)
            deadline = time.monotonic() + 30
            while agent.remote.refused == refused and time.monotonic() < deadline:
                time.sleep(0.05)
            assert agent.remote.version == 3 and why in (agent.remote.last_error or ""), agent.remote.last_error
        assert "camfleet_agent_config_version 3.0" in agent.metrics.render().decode()
    finally:
        agent.stop()
    mqtt_publish(mosquitto.host, mosquitto.port, topic, b"", retain=True)

    # restart with no retained message left: the stored settings are verified again and applied at once
    again = Agent(settings)
    try:
        again.start()
        assert again.remote.version == 3 and again.cameras["door"].uploads[0].hourly_cap == 2
    finally:
        again.stop()
    # a tampered file is refused at start (and the agent still runs on its local settings)
    stored = json.loads((settings.data_dir / CONFIG_FILE).read_text())
    stored["config"] = stored["config"].replace('"hourly_cap":2', '"hourly_cap":2000')
    (settings.data_dir / CONFIG_FILE).write_text(json.dumps(stored))
    third = Agent(settings)
    try:
        third.start()
        assert third.remote.version is None and "signature" in (third.remote.last_error or "")
        assert any(p.startswith("settings refused") for p in third.status().problems)
    finally:
        third.stop()


def test_a_camera_that_cannot_reopen_is_reported_not_fatal(  # type: ignore[no-untyped-def]
    mosquitto, settings, agent, image_folder: Path, collector
) -> None:
    seen = collector(f"camfleet/v1/{settings.site}/agents/{AGENT}/reply")
    shutil.rmtree(image_folder)  # the camera's source is gone
    cmd = Command(command="restart", camera="door")
    send(mosquitto, settings, to_json(cmd))
    reply = from_json(CommandReply, seen.wait_for(reply_to(cmd.command_id), "the restart reply").payload)
    assert reply.result == "error" and "could not reopen" in reply.message
    assert any(p.startswith("camera door: could not reopen") for p in agent.status().problems)
    ok = Command(command="snapshot", camera="yard")  # the other camera and the agent go on
    send(mosquitto, settings, to_json(ok))
    assert from_json(CommandReply, seen.wait_for(reply_to(ok.command_id), "a later reply").payload).result == "ok"


def test_hub_cameras_start_and_a_bad_source_is_reported_not_fatal(  # type: ignore[no-untyped-def]
    mosquitto, settings, fleet_seed: str, image_folder: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(b"\x00not a video" * 100)  # a corrupt stream
    config = AgentConfig(
        version=1,
        cameras=[
            CameraConfig(name="porch", source=str(image_folder), fps=4),
            CameraConfig(name="gate", source=str(corrupt), fps=4),
        ],
    )
    topic = TOPICS.config(settings.site, AGENT)
    mqtt_publish(mosquitto.host, mosquitto.port, topic, signed(fleet_seed, settings.site, config), retain=True)
    agent = Agent(settings)
    agent.start()
    try:
        deadline = time.monotonic() + 60
        while agent.remote.version != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.remote.version == 1
        deadline = time.monotonic() + 30
        while "porch" not in agent.pipelines and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {"door", "yard", "porch"} <= set(agent.pipelines)
        status = agent.status()
        deadline = time.monotonic() + 30
        while not any(p.startswith("camera gate:") for p in status.problems) and time.monotonic() < deadline:
            time.sleep(0.05)
            status = agent.status()
        assert any(p.startswith("camera gate:") and "corrupt.avi" in p for p in status.problems), status.problems
        assert status.state == "online" and agent.mqtt is not None and agent.mqtt.connected.is_set()
    finally:
        agent.stop()
        mqtt_publish(mosquitto.host, mosquitto.port, topic, b"", retain=True)
    # restarted: the stored settings start the hub's cameras again, the bad one is reported again
    again = Agent(settings)
    try:
        again.start()
        assert "porch" in again.pipelines and again.remote.version == 1
        deadline = time.monotonic() + 30
        while not any(p.startswith("camera gate:") for p in again.status().problems) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(p.startswith("camera gate:") and "corrupt.avi" in p for p in again.status().problems)
    finally:
        again.stop()
