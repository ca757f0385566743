"""Fixtures for the fleet tests: a started hub (ingest on, SQLite or PostgreSQL) on the session Mosquitto, a REST
client with the first admin's every-site token, and an MQTT client that plays the agents."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))  # `import fleethelpers` under --import-mode=importlib

from fleethelpers import ADMIN_PASSWORD, ADMIN_USER, FleetHub, hub_settings, token_for  # noqa: E402

from camfleet_hub.api import create_app  # noqa: E402
from camfleet_hub.app import Hub  # noqa: E402
from camfleet_hub.core.comms.mqtt import MqttClient
from tests.support.polling import unique  # noqa: E402


@pytest.fixture
def fleet_factory(tmp_path: Path, mosquitto) -> Iterator[Callable[..., FleetHub]]:  # type: ignore[no-untyped-def]
    """Start hubs with ingest on the session Mosquitto, each with its own topic root, plus an 'agent' client."""
    started: list[tuple[Hub, TestClient, MqttClient]] = []

    def make(db_url: str) -> FleetHub:
        settings = hub_settings(tmp_path / unique("h"), db_url, mosquitto.host, mosquitto.port)
        hub = Hub(settings, http=False, ingest=True, broker=False)
        services = hub.start()
        assert services.mqtt.wait_connected(30), "hub MQTT client did not connect"
        assert hub.ingest is not None and hub.ingest.client.wait_connected(30), "ingest did not connect"
        client = TestClient(create_app(services), headers={"Authorization": f"Bearer {token_for(services)}"})
        client.__enter__()
        agent = MqttClient(mosquitto.host, mosquitto.port, unique("agent-"))
        assert agent.start(30), "the test agent client did not connect"
        started.append((hub, client, agent))
        return FleetHub(services=services, client=client, hub=hub, agent=agent, mosquitto=mosquitto)

    try:
        yield make
    finally:
        for hub, client, agent in reversed(started):
            agent.stop()
            client.__exit__(None, None, None)
            hub.stop()


@pytest.fixture
def fleet(db_url: str, fleet_factory: Callable[..., FleetHub]) -> FleetHub:
    return fleet_factory(db_url)


@pytest.fixture
def sqlite_fleet(sqlite_url: str, fleet_factory: Callable[..., FleetHub]) -> FleetHub:
    return fleet_factory(sqlite_url)


__all__ = ["ADMIN_PASSWORD", "ADMIN_USER"]
