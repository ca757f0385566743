"""The hub's service container: built once by ``app.Hub`` at start, immutable afterwards.

``HubCore`` is the infrastructure every part needs (settings, database, store, MQTT, the fleet signing key);
background workers are built from it. ``HubServices`` adds the long-lived parts the routes share (model
runtimes, thumbnails, near-duplicate indexes, the embedder, the import worker, the fleet runtime). Routes receive
it through ``core.deps.ServicesDep``; nothing is attached to it or to the FastAPI app later.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.store.base import ObjectStore
from camfleet_hub.ingest.stats import IngestStats

if TYPE_CHECKING:
    from camfleet_contract.topics import Topics
    from camfleet_hub.core.comms.mqtt import MqttClient
    from camfleet_hub.datasets.duplicates import NearIndexes
    from camfleet_hub.datasets.embeddings import Embedder
    from camfleet_hub.datasets.media import ThumbnailCache
    from camfleet_hub.fleet.service import FleetRuntime
    from camfleet_hub.imports.worker import ImportWorker
    from camfleet_hub.serving.classify import RuntimeCache
    from camfleet_hub.serving.service import PredictionLogWriter
    from camfleet_hub.training.announce import BundleSignatures


@dataclass(frozen=True)
class HubCore:
    """Infrastructure handles, the same for every part of one hub process."""

    settings: HubSettings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    mqtt: MqttClient
    topics: Topics
    fleet_signing_key: str  # the hub's private ed25519 seed (hex); agents hold its public key as models.fleet_key
    ingest_stats: IngestStats
    bundle_signatures: BundleSignatures  # each stored bundle's signature, read once (announcements repeat it)


@dataclass(frozen=True)
class HubServices(HubCore):
    """``HubCore`` plus what routes share; the optional parts are None in a process that does not run them."""

    runtimes: RuntimeCache
    prediction_log: PredictionLogWriter
    thumbnails: ThumbnailCache
    near_indexes: NearIndexes
    embedder: Embedder | None = None  # with datasets (the serving hub), None in an ingest-only process
    import_worker: ImportWorker | None = None
    fleet: FleetRuntime | None = None  # command replies, event retention; with the publisher

    @classmethod
    def of(
        cls,
        core: HubCore,
        *,
        runtimes: RuntimeCache,
        prediction_log: PredictionLogWriter,
        thumbnails: ThumbnailCache,
        near_indexes: NearIndexes,
        embedder: Embedder | None = None,
        import_worker: ImportWorker | None = None,
        fleet: FleetRuntime | None = None,
    ) -> HubServices:
        infra = {f.name: getattr(core, f.name) for f in fields(HubCore)}
        return cls(
            **infra,
            runtimes=runtimes,
            prediction_log=prediction_log,
            thumbnails=thumbnails,
            near_indexes=near_indexes,
            embedder=embedder,
            import_worker=import_worker,
            fleet=fleet,
        )
