"""Infrastructure every domain uses: settings, database, object store, MQTT, HTTP plumbing, the service container."""
