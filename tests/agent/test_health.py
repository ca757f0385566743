"""/healthz, /readyz and Prometheus /metrics of a whole agent, and how an outage and a full outbox show there."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from bundles import announcement_for, bundle_zip
from mqttkit import mqtt_publish
from prometheus_client.parser import text_string_to_metric_families

from camfleet_agent.app import Agent
from camfleet_agent.config import AgentSettings, CameraSettings, DeliverySettings, HealthSettings, MqttSettings
from camfleet_contract.topics import Topics
from tests.support.polling import wait_for

CLF = "clothes"


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_health_ready_and_metrics_through_an_outage(  # type: ignore[no-untyped-def]
    mosquitto_factory, static_hub, fleet_seed: str, fleet_public: str, image_folder: Path, tmp_path: Path
) -> None:
    broker = mosquitto_factory()
    site = f"s{uuid.uuid4().hex[:8]}"
    static_hub.set_fleet_key(fleet_public)
    data = bundle_zip(fleet_seed, classifier=CLF, version="7", site=site)
    ann = announcement_for(data, static_hub.put("bundles/b.zip", data), CLF, "7")
    mqtt_publish(broker.host, broker.port, Topics().model(site, CLF), ann.model_dump_json().encode(), retain=True)
    settings = AgentSettings(
        agent="edge-h",
        site=site,
        hub_url=static_hub.url,
        data_dir=tmp_path / "agent",
        fleet_public_key=fleet_public,
        health=HealthSettings(port=0),
        delivery=DeliverySettings(outbox_max_bytes=64 * 1024),  # a tiny bound: filled during the outage
        mqtt=MqttSettings(host=broker.host, port=broker.port, keepalive=5),
        cameras=[CameraSettings(name="door", source=str(image_folder), fps=20, upload_interval_s=0.01)],
    )
    agent = Agent(settings)
    agent.start()
    try:
        assert agent.health is not None
        url = f"http://{agent.health.host}:{agent.health.port}"
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 200, "ready")
        wait_for(lambda: agent.model_versions() == {CLF: "7"}, "model 7 active")
        wait_for(
            lambda: (
                metrics(url).get(
                    ("camfleet_agent_inference_latency_seconds_count", (("camera", "door"), ("classifier", CLF))), 0
                )
                > 3
            ),
            "latencies",
        )
        m = metrics(url)
        assert m[("camfleet_agent_model_info", (("classifier", CLF), ("version", "7")))] == 1.0
        assert m[("camfleet_agent_mqtt_connected", ())] == 1.0
        assert m[("camfleet_agent_camera_fps", (("camera", "door"), ("stage", "classify")))] > 0
        assert ("camfleet_agent_gate_ratio", (("camera", "door"),)) in m
        ratio = agent.status().gate_ratio  # the same figure reaches the hub's fleet page
        assert set(ratio) == {"door"} and 0.0 < ratio["door"] <= 1.0
        assert httpx.get(f"{url}/nope", timeout=10).status_code == 404

        broker.stop()  # outage: not ready, frames pile up on disk until the bound, then the least valuable go
        wait_for(
            lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 503, "not ready while the broker is away"
        )
        assert "mqtt: not connected" in httpx.get(f"{url}/readyz", timeout=10).json()["reasons"]
        wait_for(
            lambda: (
                metrics(url).get(("camfleet_agent_outbox_dropped_total", (("reason", "outbox_full_sampled"),)), 0) > 0
            ),
            "evictions",
        )
        m = metrics(url)
        assert 0 < m[("camfleet_agent_outbox_bytes", ())] <= 64 * 1024 and m[("camfleet_agent_outbox_depth", ())] > 0
        status = agent.status()
        assert status.dropped.get("outbox_full_sampled", 0) > 0 and status.outbox_depth > 0
        assert status.dropped.get("outbox_full_event", 0) == 0  # events are evicted last: sampled frames first

        broker.start()
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 200, "ready again")
        wait_for(lambda: metrics(url)[("camfleet_agent_mqtt_reconnects_total", ())] >= 1, "a reconnect counted")
        assert agent.status().reconnects >= 1
    finally:
        agent.stop()
