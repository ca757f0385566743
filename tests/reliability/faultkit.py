"""Helpers of the fault tests: frame payloads, seeding, an at-least-once publisher, an in-process ingest worker."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from camfleet_contract.envelope import encode_frame, new_header
from camfleet_contract.images import probe_image
from camfleet_contract.topics import Topics
from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.db.session import make_sessionmaker
from camfleet_hub.core.store.base import ObjectStore
from camfleet_hub.datasets.models import Camera, Classifier, Frame, Site
from camfleet_hub.ingest.stats import IngestStats
from camfleet_hub.ingest.worker import IngestWorker

SITE, CAMERA = "shop", "cam1"


def frame_payload(jpeg: bytes, frame_id: str, topics_site: str = SITE, camera: str = CAMERA) -> bytes:
    _fmt, width, height = probe_image(jpeg)
    header = new_header("agent1", topics_site, camera, jpeg, width, height).model_copy(update={"frame_id": frame_id})
    return encode_frame(header, jpeg)


def seed_site(engine: Engine) -> None:
    with make_sessionmaker(engine)() as session:
        site = Site(name=SITE)
        session.add(site)
        session.flush()
        session.add(Camera(site_id=site.id, name=CAMERA))
        session.add(Classifier(site_id=site.id, name="door"))
        session.commit()


def settings_for(tmp_path: Path, db_url: str, host: str, port: int, **extra: Any) -> HubSettings:
    """A hub on its own topic root and ingest client id; ``extra`` merges top-level sections."""
    data: dict[str, Any] = {
        "data_dir": str(tmp_path / "hub"),
        "mqtt": {
            "embedded": False,
            "host": host,
            "port": port,
            "root": f"cf{uuid.uuid4().hex[:8]}",
            "client_id": f"ingest-{uuid.uuid4().hex[:8]}",
        },
        "db": {"url": db_url},
        "ingest": {"batch_size": 16},
        "auth": {"admin_username": "admin", "admin_password": "admin-password-1"},
    }
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return HubSettings.model_validate(data)


def stored_ids(sessions: sessionmaker[Session]) -> list[str]:
    """Every stored frame id (a list, so a duplicate would show)."""
    with sessions() as session:
        return list(session.execute(select(Frame.frame_id)).scalars())


def frame_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.execute(select(func.count()).select_from(Frame)).scalar_one())


@dataclass
class Sender:
    """An agent-like publisher: QoS 1, keeps every message until the broker's PUBACK and resends the rest.

    ``send`` publishes (paho queues while disconnected); ``resend_unacked`` republishes what was never
    acknowledged, as the agent's outbox does after a reconnect. The hub sees a frame at least once.
    """

    host: str
    port: int
    topics: Topics
    sent: dict[str, bytes] = field(default_factory=dict)
    infos: dict[str, paho.MQTTMessageInfo] = field(default_factory=dict)
    topic_of: dict[str, str] = field(default_factory=dict)
    client: paho.Client | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"sender-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        self.client.reconnect_delay_set(0.2, 1.0)
        self.client.max_queued_messages_set(0)
        connected = threading.Event()
        self.client.on_connect = lambda *_args: connected.set()
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        # Publishing before CONNACK answers "not connected" (rc != 0) and would count as unacknowledged for good.
        assert connected.wait(30), f"sender could not connect to {self.host}:{self.port}"

    def stop(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()

    def send(self, jpeg: bytes, frame_id: str | None = None, site: str = SITE) -> str:
        assert self.client is not None
        fid = frame_id or uuid.uuid4().hex
        payload = frame_payload(jpeg, fid, site)
        with self.lock:
            self.sent[fid] = payload
            self.topic_of[fid] = self.topics.frame(site, CAMERA)
            self.infos[fid] = self.client.publish(self.topic_of[fid], payload, qos=1)
        return fid

    def unacked(self) -> list[str]:
        with self.lock:
            # rc != 0: published while disconnected (paho may still send it later; resending is harmless)
            return [fid for fid, info in self.infos.items() if info.rc != 0 or not info.is_published()]

    def resend_unacked(self) -> int:
        assert self.client is not None
        ids = self.unacked()
        with self.lock:
            for fid in ids:
                self.infos[fid] = self.client.publish(self.topic_of[fid], self.sent[fid], qos=1)
        return len(ids)


@contextmanager
def ingest_worker(
    settings: HubSettings, engine: Engine, store: ObjectStore
) -> Iterator[tuple[IngestWorker, sessionmaker[Session], IngestStats]]:
    sessions = make_sessionmaker(engine)
    stats = IngestStats()
    worker = IngestWorker(settings, sessions, store, stats, Topics(settings.mqtt.root))
    try:
        assert worker.start(30)
        assert worker.client.subscribed.wait(30)
        yield worker, sessions, stats
    finally:
        worker.stop()
