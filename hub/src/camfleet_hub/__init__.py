"""camfleet hub: REST API + web UI, MQTT frame ingest, object store, model registry and training-job queue."""

__version__ = "0.1.0"
