"""MQTT frame and agent-status ingest: validate, store, commit, then acknowledge."""

from camfleet_hub.ingest.stats import IngestStats
from camfleet_hub.ingest.worker import IngestWorker

__all__ = ["IngestStats", "IngestWorker"]
