"""The older tools' REST endpoints (temple classifier server, dataset tool ``/cv``) over camfleet's sites."""
