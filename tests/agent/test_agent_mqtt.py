"""The whole agent against a real Mosquitto: models pulled over loopback HTTP, events, frames, status, last-will."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from bundles import announcement_for, bundle_zip
from mqttkit import mqtt_publish

from camfleet_agent.app import OPENCV_THREADS, Agent
from camfleet_agent.config import AgentSettings, CameraSettings, ModelTrustSettings, MqttSettings
from camfleet_agent.keys import PIN_FILE
from camfleet_contract.envelope import decode_frame
from camfleet_contract.images import decode_image
from camfleet_contract.messages import AgentStatus, Command, Event, from_json, to_json
from camfleet_contract.topics import Topics

CLF = "clothes"
CAMERA = "door"
AGENT = "edge-1"
TOPICS = Topics()


def is_event(version: str | None = None):  # type: ignore[no-untyped-def]
    def check(msg) -> bool:  # type: ignore[no-untyped-def]
        if not msg.topic.endswith("/event"):
            return False
        return version is None or from_json(Event, msg.payload).model_version == version

    return check


def is_status(state: str, models: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    def check(msg) -> bool:  # type: ignore[no-untyped-def]
        if not msg.topic.endswith("/status") or not msg.payload:
            return False
        status = from_json(AgentStatus, msg.payload)
        return status.state == state and (models is None or status.models == models)

    return check


def announce(mosquitto, hub, seed: str, site: str, version: str) -> None:  # type: ignore[no-untyped-def]
    data = bundle_zip(seed, classifier=CLF, version=version, site=site)
    ann = announcement_for(data, hub.put(f"bundles/{CLF}-{version}.zip", data), CLF, version)
    mqtt_publish(mosquitto.host, mosquitto.port, TOPICS.model(site, CLF), to_json(ann), retain=True)


@pytest.fixture
def settings(mosquitto, static_hub, image_folder: Path, tmp_path: Path, site: str) -> AgentSettings:  # type: ignore[no-untyped-def]
    return AgentSettings(
        agent=AGENT,
        site=site,
        hub_url=static_hub.url,
        data_dir=tmp_path / "agent",
        fleet_public_key="",  # pinned from the hub on first start (plain http: only with the explicit opt-in)
        models=ModelTrustSettings(trust_on_first_use_http=True),
        status_interval_s=60,
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port, keepalive=10),
        cameras=[CameraSettings(name=CAMERA, source=str(image_folder), fps=8, upload_interval_s=0.25)],
    )


def test_agent_classifies_publishes_and_leaves_a_last_will(  # type: ignore[no-untyped-def]
    mosquitto, static_hub, fleet_seed: str, fleet_public: str, settings: AgentSettings, site: str, collector
) -> None:
    static_hub.set_fleet_key(fleet_public)
    announce(mosquitto, static_hub, fleet_seed, site, "1")  # retained before the agent exists
    seen = collector(f"camfleet/v1/{site}/#")
    agent = Agent(settings)
    agent.start()
    try:
        # events carry the announced model version
        msg = seen.wait_for(is_event("1"), "an event from model version 1")
        event = from_json(Event, msg.payload)
        assert msg.topic == TOPICS.event(site, CAMERA)
        assert (event.site, event.camera, event.agent, event.classifier) == (site, CAMERA, AGENT, CLF)
        assert event.label == event.predictions[0].label and event.label in ("dress", "hat", "shoes")
        assert len(event.predictions) == 3 and isinstance(event.anomaly, bool) and event.motion is not None
        assert (settings.data_dir / PIN_FILE).read_text().strip() == fleet_public
        # OpenCV single-threaded in the agent: its pool would compete with ONNX Runtime's threads (issue 12)
        assert cv2.getNumThreads() == OPENCV_THREADS == 1

        # frames arrive in the v1 envelope, decode, and carry the top-1 of each classifier
        msg = seen.wait_for(
            lambda m: m.topic == TOPICS.frame(site, CAMERA) and decode_frame(m.payload)[0].predictions,
            "a frame with predictions",
        )
        header, jpeg = decode_frame(msg.payload)
        assert (header.site, header.camera, header.agent, header.reason) == (site, CAMERA, AGENT, "sample")
        assert decode_image(jpeg).shape == (header.height, header.width, 3)
        same_frame = seen.wait_for(
            lambda m: is_event()(m) and from_json(Event, m.payload).frame_id == header.frame_id,
            "the event of the uploaded frame",
        )
        assert from_json(Event, same_frame.payload).label == header.predictions[0].label

        # the retained status says online, with the model; a newcomer gets it too
        seen.wait_for(is_status("online", {CLF: "1"}), "status online with model 1")
        late = collector(TOPICS.status(site, AGENT))
        retained = late.wait_for(lambda m: m.retain, "the retained status")
        assert from_json(AgentStatus, retained.payload).cameras == [CAMERA]

        # garbage on a model topic and on the command topic is ignored; a new version is swapped in live
        mqtt_publish(mosquitto.host, mosquitto.port, TOPICS.model(site, "junk"), b"{not json")
        mqtt_publish(mosquitto.host, mosquitto.port, TOPICS.cmd(site, AGENT), json.dumps({"command": "dance"}).encode())
        announce(mosquitto, static_hub, fleet_seed, site, "2")
        seen.wait_for(is_event("2"), "an event from model version 2")
        seen.wait_for(is_status("online", {CLF: "2"}), "status online with model 2")

        # a snapshot command uploads a frame with reason "request"
        cmd = Command(command="snapshot", camera=CAMERA)
        mqtt_publish(mosquitto.host, mosquitto.port, TOPICS.cmd(site, AGENT), to_json(cmd))
        seen.wait_for(
            lambda m: m.topic.endswith("/frame") and decode_frame(m.payload)[0].reason == "request",
            "a frame uploaded on request",
        )
        assert agent.pipelines[CAMERA].queue.maxsize == settings.queue_size
    finally:
        agent.stop(clean=False)  # drop the connection like a crash: no offline status from the agent itself
    seen.wait_for(is_status("offline"), "the last-will offline status")


def test_clean_stop_publishes_offline_and_restart_classifies_offline(  # type: ignore[no-untyped-def]
    mosquitto, static_hub, fleet_seed: str, fleet_public: str, settings: AgentSettings, site: str, collector
) -> None:
    settings = settings.model_copy(update={"fleet_public_key": fleet_public})
    announce(mosquitto, static_hub, fleet_seed, site, "5")
    seen = collector(f"camfleet/v1/{site}/#")
    agent = Agent(settings)
    agent.start()
    try:
        seen.wait_for(is_event("5"), "an event from model version 5")
    finally:
        agent.stop()
    seen.wait_for(is_status("offline"), "the offline status of a clean stop")

    # restart with the hub gone and no retained announcement left: the model on disk is loaded at once.
    # (A new client id: the persistent session of the first one would deliver the withdrawal queued for it.)
    mqtt_publish(mosquitto.host, mosquitto.port, TOPICS.model(site, CLF), b"", retain=True)
    mqtt = settings.mqtt.model_copy(update={"client_id": f"fresh-{site}"})
    offline = settings.model_copy(update={"hub_url": "http://127.0.0.1:9", "mqtt": mqtt})
    seen.seen.clear()
    agent = Agent(offline)
    agent.start()
    try:
        assert agent.model_versions() == {CLF: "5"}
        seen.wait_for(is_status("online"), "online again")
    finally:
        agent.stop()
