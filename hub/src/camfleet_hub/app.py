"""The hub builder: creates and starts every part in order, stops them in reverse; nothing starts at import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from camfleet_hub.config import HubSettings
from camfleet_hub.ingest.stats import IngestStats
from camfleet_hub.store.base import ObjectStore

if TYPE_CHECKING:
    from camfleet_contract.topics import Topics
    from camfleet_hub.comms.mqtt import MqttClient


@dataclass
class HubServices:
    """Everything the API and workers share; routes get it through a FastAPI dependency, never as app attributes."""

    settings: HubSettings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    mqtt: MqttClient
    topics: Topics
    fleet_key: str  # ed25519 seed, hex; public key via camfleet_contract.signing.public_key_of
    ingest_stats: IngestStats
