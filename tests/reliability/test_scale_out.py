"""Scale-out: two hub ingest processes share the frame subscription (``$share/camfleet-hub/...`` on Mosquitto 2).
One runs as ``python -m camfleet_hub ingest`` and is SIGKILLed mid-stream, then restarted by its supervisor (here:
the test) with the same client id; every frame is stored exactly once (by frame id). Outcome and the broker
behaviour it relies on are in docs/SCALING.md and docs/RELIABILITY.md."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from camfleet_contract.topics import Topics
from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.db.session import make_engine, migrate
from camfleet_hub.core.store import DirectoryStore
from tests.reliability.faultkit import Sender, ingest_worker, seed_site, settings_for, stored_ids
from tests.support.polling import wait_for

GROUP = "camfleet-hub"
FRAMES = 240


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    eng = make_engine(pg_url)
    migrate(eng)
    seed_site(eng)
    try:
        yield eng
    finally:
        eng.dispose()


def _start_ingest(settings: HubSettings, client_id: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        CAMFLEET_HUB__DATA_DIR=str(settings.data_dir),
        CAMFLEET_HUB__DB__URL=settings.db.url,
        CAMFLEET_HUB__STORE__PATH=str(settings.store_path()),
        CAMFLEET_HUB__MQTT__EMBEDDED="false",
        CAMFLEET_HUB__MQTT__HOST=settings.mqtt.host,
        CAMFLEET_HUB__MQTT__PORT=str(settings.mqtt.port),
        CAMFLEET_HUB__MQTT__ROOT=settings.mqtt.root,
        CAMFLEET_HUB__MQTT__CLIENT_ID=client_id,
        CAMFLEET_HUB__MQTT__SHARED_GROUP=GROUP,
        CAMFLEET_HUB__AUTH__ADMIN_PASSWORD="admin-password-1",
    )
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "camfleet_hub", "ingest"], stdout=out, stderr=out, env=env)


def test_two_ingest_processes_one_killed_every_frame_once(
    tmp_path: Path,
    engine: Engine,
    mosquitto,
    jpegs: list[bytes],  # type: ignore[no-untyped-def]
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    settings = settings_for(
        tmp_path, url, mosquitto.host, mosquitto.port, mqtt={"shared_group": GROUP}, store={"path": "objects"}
    )
    store = DirectoryStore(settings.store_path())  # one store shared by both processes (S3 in production)
    log = tmp_path / "ingest-a.log"
    proc = _start_ingest(settings, f"{settings.mqtt.client_id}-a", log)
    try:
        with ingest_worker(settings, engine, store) as (_worker, sessions, stats_b):
            wait_for(lambda: "ingest running" in log.read_text(errors="replace"), "process A to start", 60)
            time.sleep(1.0)  # A's subscription is in place once it has connected; give it a moment
            sender = Sender(mosquitto.host, mosquitto.port, Topics(settings.mqtt.root))
            sender.start()
            try:
                for n in range(FRAMES // 2):
                    sender.send(jpegs[n % len(jpegs)])
                    time.sleep(0.01)
                wait_for(lambda: len(stored_ids(sessions)) >= FRAMES // 4, "frames flowing", 60)
                os.kill(proc.pid, signal.SIGKILL)  # mid-stream: A may hold unacknowledged frames
                proc.wait(timeout=30)
                for n in range(FRAMES // 2, FRAMES):
                    sender.send(jpegs[n % len(jpegs)])
                    time.sleep(0.01)
                # Mosquitto keeps what it had sent A, unacknowledged, and A's share of new frames in A's session.
                wait_for(lambda: sender.unacked() == [], "the broker to take every frame", 60)
                time.sleep(2.0)
                missing_while_down = len(set(sender.sent) - set(stored_ids(sessions)))
                print(f"frames waiting in the killed process's session: {missing_while_down}")
                proc = _start_ingest(settings, f"{settings.mqtt.client_id}-a", log)  # same session: its backlog
                wait_for(lambda: set(stored_ids(sessions)) >= set(sender.sent), f"all {FRAMES} frames stored", 60)
                ids = stored_ids(sessions)
                assert len(ids) == len(set(ids)) == FRAMES
                by_b = stats_b.snapshot().accepted
                assert 0 < by_b < FRAMES, f"process B stored {by_b} of {FRAMES}: the subscription was not shared"
                print(f"process B stored {by_b} of {FRAMES}")
            finally:
                sender.stop()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
