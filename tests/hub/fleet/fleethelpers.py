"""Plain helpers for the fleet tests (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from camfleet_contract.messages import Event, Prediction, to_json
from camfleet_hub.app import Hub, HubServices
from camfleet_hub.auth.models import Role
from camfleet_hub.core.comms.mqtt import MqttClient
from camfleet_hub.core.config import HubSettings
from camfleet_hub.ingest.stats import IngestCounts
from tests.support.polling import WAIT_S, unique, wait_for  # noqa: F401 - re-exported

API = "/api/v1"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-password-1"


def hub_settings(data_dir: Path, db_url: str, host: str, port: int) -> HubSettings:
    return HubSettings.model_validate(
        {
            "data_dir": str(data_dir),
            "mqtt": {"embedded": False, "host": host, "port": port, "root": unique("cf"), "client_id": unique("ing-")},
            "db": {"url": db_url},
            "ingest": {"enabled": True, "batch_size": 32},
            "auth": {"admin_username": ADMIN_USER, "admin_password": ADMIN_PASSWORD},
        }
    )


def token_for(services: HubServices, site: str | None = None, role: Role = Role.ADMIN) -> str:
    """A token of the first admin: every site (default) or one site with ``role``."""
    from camfleet_hub.auth import callers, tokens, users
    from camfleet_hub.datasets import crud

    with services.sessions() as session:
        admin = users.get_user_by_name(session, ADMIN_USER)
        found = crud.get_site(session, site) if site else None
        _row, secret = tokens.create_token(session, callers.caller_of_user(session, admin), unique("t"), found, role)
    return secret


@dataclass
class FleetHub:
    services: HubServices
    client: TestClient
    hub: Hub
    agent: MqttClient  # publishes what an agent would
    mosquitto: Any

    @property
    def topics(self) -> Any:
        return self.services.topics

    def site(self, name: str = "shop", cameras: tuple[str, ...] = ("cam1",)) -> None:
        assert self.client.post(f"{API}/sites", json={"name": name}).status_code == 201
        for cam in cameras:
            assert self.client.post(f"{API}/sites/{name}/cameras", json={"name": cam}).status_code == 201

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.agent.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def event(self, **fields: Any) -> Event:
        """Publish an event (defaults: site shop, camera cam1, classifier door, label open) and return it."""
        base: dict[str, Any] = {
            "frame_id": unique("f"),
            "site": "shop",
            "camera": "cam1",
            "agent": "agent1",
            "classifier": "door",
            "model_version": "3",
            "label": "open",
            "probability": 0.9,
            "predictions": [Prediction(label="open", probability=0.9), Prediction(label="closed", probability=0.1)],
            "anomaly": False,
            "anomaly_score": 0.1,
            "latency_ms": 4.0,
        }
        base.update(fields)
        event = Event(**base)
        self.publish(self.topics.event(event.site, event.camera), to_json(event))
        return event

    def stats(self) -> IngestCounts:
        return self.services.ingest_stats.snapshot()


@contextmanager
def started_fleet(data_dir: Path, db_url: str, mosquitto: Any) -> Iterator[FleetHub]:
    """A started hub with ingest on ``mosquitto`` (its own topic root), a REST client with the first admin's
    every-site token and an MQTT client that plays the agents; all stopped on exit."""
    from camfleet_hub.api import create_app

    hub = Hub(hub_settings(data_dir, db_url, mosquitto.host, mosquitto.port), http=False, ingest=True, broker=False)
    services = hub.start()
    try:
        assert services.mqtt.wait_connected(30), "hub MQTT client did not connect"
        assert hub.ingest is not None and hub.ingest.client.wait_connected(30), "ingest did not connect"
        with TestClient(create_app(services), headers={"Authorization": f"Bearer {token_for(services)}"}) as client:
            agent = MqttClient(mosquitto.host, mosquitto.port, unique("agent-"))
            try:
                assert agent.start(30), "the test agent client did not connect"
                yield FleetHub(services=services, client=client, hub=hub, agent=agent, mosquitto=mosquitto)
            finally:
                agent.stop()
    finally:
        hub.stop()


def iso(ts: datetime) -> str:
    return ts.isoformat()
