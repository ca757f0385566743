"""Plain helpers for the hub core tests (imported as a module; fixtures live in conftest.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from camfleet_contract.envelope import encode_frame, new_header
from camfleet_contract.images import probe_image
from camfleet_hub.config import HubSettings
from camfleet_hub.db.models import Camera, Classifier, Site
from camfleet_hub.db.session import make_sessionmaker

WAIT_S = 30.0


def wait_for(predicate: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded); fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what} (last value: {value!r})")
        time.sleep(0.05)


def unique(prefix: str) -> str:
    """A name that no other test (or earlier run on the shared broker) uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def frame_payload(jpeg: bytes, site: str, camera: str, agent: str = "agent1", frame_id: str | None = None) -> bytes:
    """A valid v1 envelope around a real JPEG."""
    _fmt, width, height = probe_image(jpeg)
    header = new_header(agent, site, camera, jpeg, width, height)
    if frame_id is not None:
        header = header.model_copy(update={"frame_id": frame_id})
    return encode_frame(header, jpeg)


def hub_settings(tmp_path: Path, db_url: str, mqtt_host: str, mqtt_port: int, **ingest: Any) -> HubSettings:
    """Settings for a test hub on its own topic root and ingest client id (the broker is shared)."""
    return HubSettings.model_validate(
        {
            "data_dir": str(tmp_path / "hub"),
            "mqtt": {
                "embedded": False,
                "host": mqtt_host,
                "port": mqtt_port,
                "root": unique("cf"),
                "client_id": unique("ingest-"),
            },
            "db": {"url": db_url},
            "ingest": {"batch_size": 16, **ingest},
        }
    )


def seed_site(engine: Engine, site: str = "shop", cameras: tuple[str, ...] = ("cam1",), classifiers=("door", "lights")):
    """Create a site with cameras and classifiers; returns the site id."""
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        row = Site(name=site)
        session.add(row)
        session.flush()
        for cam in cameras:
            session.add(Camera(site_id=row.id, name=cam))
        for clf in classifiers:
            session.add(Classifier(site_id=row.id, name=clf))
        session.commit()
        return row.id
