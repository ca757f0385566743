"""Fixtures for the hub API tests: a real HubServices (SQLite or PostgreSQL, directory store, Mosquitto)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from camfleet_contract.signing import generate_signing_key
from camfleet_hub.api import create_app
from camfleet_hub.app import Hub, HubServices
from camfleet_hub.core.config import HubSettings

sys.path.insert(0, str(Path(__file__).parent))  # `import apihelpers` under --import-mode=importlib

from apihelpers import RetainedReader, unique  # noqa: E402

API = "/api/v1"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-password-1"


@dataclass
class ApiHub:
    """A started hub (no HTTP server of its own) with a TestClient over ``create_app(services)``."""

    services: HubServices
    client: TestClient
    hub: Hub
    admin_token: str = ""

    @property
    def prefix(self) -> str:
        """Topic prefix ``{root}/v1`` of this hub (unique per test: the broker is shared)."""
        return self.services.topics.prefix


def _settings(
    tmp_path: Path, db_url: str, host: str, port: int, ingest: bool, sections: dict[str, Any] | None = None
) -> HubSettings:
    return HubSettings.model_validate(
        {
            **(sections or {}),
            "data_dir": str(tmp_path / "hub"),
            "mqtt": {"embedded": False, "host": host, "port": port, "root": unique("cf"), "client_id": unique("ing-")},
            "db": {"url": db_url},
            "ingest": {"enabled": ingest},
            "auth": {"admin_username": ADMIN_USER, "admin_password": ADMIN_PASSWORD},
            # URL-import tests serve their files from loopback (test_import_sources checks the default refusal).
            "imports": {"url_allow_private": True},
        }
    )


def _admin_token(services: HubServices) -> str:
    """An every-site admin token of the first admin, made through the service as the CLI does."""
    from camfleet_hub.auth import callers, tokens, users
    from camfleet_hub.auth.models import Role

    with services.sessions() as session:
        admin = users.get_user_by_name(session, ADMIN_USER)
        _row, secret = tokens.create_token(session, callers.caller_of_user(session, admin), "tests", None, Role.ADMIN)
    return secret


@pytest.fixture
def hub_factory(tmp_path: Path, mosquitto) -> Iterator[Callable[..., ApiHub]]:  # type: ignore[no-untyped-def]
    """Start hubs on the session Mosquitto; each gets its own data dir, topic root and database URL."""
    started: list[tuple[Hub, TestClient]] = []

    def make(db_url: str, ingest: bool = False, sections: dict[str, Any] | None = None) -> ApiHub:
        """``sections``: extra settings sections (e.g. {"classify": {...}}) besides the ones every test hub has."""
        hub = Hub(
            _settings(tmp_path / unique("h"), db_url, mosquitto.host, mosquitto.port, ingest, sections),
            http=False,
            ingest=ingest,
            broker=False,
        )
        services = hub.start()
        assert services.mqtt.wait_connected(30), "hub MQTT client did not connect to mosquitto"
        token = _admin_token(services)
        # Every request of the default client carries the first admin's every-site token.
        client = TestClient(create_app(services), headers={"Authorization": f"Bearer {token}"})
        client.__enter__()  # runs the lifespan (start-up announcements)
        started.append((hub, client))
        return ApiHub(services=services, client=client, hub=hub, admin_token=token)

    try:
        yield make
    finally:
        for hub, client in reversed(started):
            client.__exit__(None, None, None)
            hub.stop()


@pytest.fixture
def api(db_url: str, hub_factory: Callable[..., ApiHub]) -> ApiHub:
    """A hub on SQLite and on PostgreSQL (parametrised)."""
    return hub_factory(db_url)


@pytest.fixture
def sqlite_api(sqlite_url: str, hub_factory: Callable[..., ApiHub]) -> ApiHub:
    """A hub on SQLite only, for tests whose database behaviour is covered elsewhere."""
    return hub_factory(sqlite_url)


@pytest.fixture
def retained(mosquitto) -> RetainedReader:  # type: ignore[no-untyped-def]
    return RetainedReader(mosquitto.host, mosquitto.port)


@pytest.fixture(scope="session")
def trainer_key() -> str:
    """The trainer's own signing key (not the fleet key)."""
    return generate_signing_key()
