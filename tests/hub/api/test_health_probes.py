"""Liveness and readiness are separate: an outage of the database or the broker makes the hub not ready (503,
naming what failed) while /healthz still answers, so Kubernetes stops routing to it without restarting it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg2
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from camfleet_hub import __version__
from camfleet_hub.api import create_app
from camfleet_hub.app import Hub
from camfleet_hub.core.config import HubSettings
from tests.support.polling import wait_for

API = "/api/v1"


def _hub(tmp_path: Path, db_url: str, host: str, port: int) -> Hub:
    settings = HubSettings.model_validate(
        {
            "data_dir": str(tmp_path / "hub"),
            "mqtt": {"embedded": False, "host": host, "port": port, "root": "cfprobe", "client_id": "probe-hub"},
            "db": {"url": db_url},
            "ingest": {"enabled": False},
            "auth": {"admin_username": "admin", "admin_password": "admin-password-1"},
        }
    )
    return Hub(settings, http=False, ingest=False, broker=False)


def test_healthz_and_readyz_on_a_database_and_a_broker_outage(
    tmp_path: Path, pg_url: str, mosquitto_factory: Callable[..., object]
) -> None:
    broker = mosquitto_factory()
    hub = _hub(tmp_path, pg_url, broker.host, broker.port)  # type: ignore[attr-defined]
    services = hub.start()
    try:
        assert services.mqtt.wait_connected(30)
        client = TestClient(create_app(services))
        alive = client.get(f"{API}/healthz")
        assert alive.status_code == 200 and alive.json()["hub_version"] == __version__
        ready = client.get(f"{API}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "store": "ok", "broker": "ok"}

        # Broker down: not ready, naming the broker; alive all the same.
        broker.stop()  # type: ignore[attr-defined]
        wait_for(lambda: not services.mqtt.connected, "the hub to notice the broker is gone")
        ready = client.get(f"{API}/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["broker"] == "not connected"
        assert ready.json()["checks"]["database"] == "ok"
        assert client.get(f"{API}/healthz").status_code == 200
        broker.start()  # type: ignore[attr-defined]
        wait_for(lambda: services.mqtt.connected, "the hub to reconnect to the broker")

        # Database refusing connections (as during a restart): not ready, naming the database; alive.
        name = make_url(pg_url).database
        admin = psycopg2.connect(
            make_url(pg_url).set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
        )
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
            ready = client.get(f"{API}/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unreachable")
            assert ready.json()["checks"]["broker"] == "ok"
            assert client.get(f"{API}/healthz").status_code == 200
        finally:
            with admin.cursor() as cur:
                cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            admin.close()
        assert client.get(f"{API}/readyz").status_code == 200
    finally:
        hub.stop()
