"""Fixtures for the fleet tests: a started hub (ingest on, SQLite or PostgreSQL) on the session Mosquitto, a REST
client with the first admin's every-site token, and an MQTT client that plays the agents."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import fleethelpers` under --import-mode=importlib

from fleethelpers import ADMIN_PASSWORD, ADMIN_USER, FleetHub, started_fleet  # noqa: E402

from tests.support.polling import unique  # noqa: E402


@pytest.fixture
def fleet_factory(tmp_path: Path, mosquitto) -> Iterator[Callable[..., FleetHub]]:  # type: ignore[no-untyped-def]
    """Start hubs with ingest on the session Mosquitto, each with its own topic root, plus an 'agent' client."""
    with ExitStack() as stack:
        yield lambda db_url: stack.enter_context(started_fleet(tmp_path / unique("h"), db_url, mosquitto))


@pytest.fixture
def fleet(db_url: str, fleet_factory: Callable[..., FleetHub]) -> FleetHub:
    return fleet_factory(db_url)


@pytest.fixture
def sqlite_fleet(sqlite_url: str, fleet_factory: Callable[..., FleetHub]) -> FleetHub:
    return fleet_factory(sqlite_url)


__all__ = ["ADMIN_PASSWORD", "ADMIN_USER"]
