"""Plain helpers for the hub core tests (imported as a module; fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from camfleet_contract.envelope import encode_frame, new_header
from camfleet_contract.images import probe_image
from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.db.session import make_sessionmaker
from camfleet_hub.datasets.models import Camera, Classifier, Site
from tests.support.polling import WAIT_S, unique, wait_for  # noqa: F401 - re-exported


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
