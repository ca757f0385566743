"""MQTT frame and agent-status ingest: validate, store, commit, then acknowledge (``worker.IngestWorker``).

Nothing is imported here: the worker imports the fleet's event rules, which import ``ingest.validate``, so an
eager import of the worker made ``import camfleet_hub.fleet.service`` on its own a circular import."""
