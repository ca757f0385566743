"""Ingest survives its dependencies failing: the broker restarted, PostgreSQL unreachable, the S3 server down,
the object store's disk full. Each test sends frames with unique ids through a real Mosquitto and checks, by frame
id, that every sent frame is stored exactly once and that nothing was acknowledged before it was stored.
Outcomes are listed in docs/RELIABILITY.md ('Fault tests')."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from camfleet_contract.topics import Topics
from camfleet_hub.api import create_app
from camfleet_hub.app import Hub
from camfleet_hub.core.db.session import make_engine, migrate
from camfleet_hub.core.store import DirectoryStore, S3Store
from camfleet_hub.datasets.models import Frame
from camfleet_hub.ingest.models import DeadLetter
from tests.reliability.faultkit import Sender, frame_count, ingest_worker, seed_site, settings_for, stored_ids
from tests.reliability.tcpproxy import TcpProxy
from tests.support.polling import wait_for

WAIT_S = 60.0
API = "/api/v1"


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    eng = make_engine(pg_url)
    migrate(eng)
    seed_site(eng)
    try:
        yield eng
    finally:
        eng.dispose()


def _check_exactly_once(sender: Sender, sessions) -> None:  # type: ignore[no-untyped-def]
    def all_stored() -> bool:
        if sender.unacked():
            sender.resend_unacked()  # as the agent's outbox does: unacknowledged messages go again
        return set(stored_ids(sessions)) >= set(sender.sent)

    wait_for(all_stored, f"all {len(sender.sent)} frames stored", WAIT_S)
    ids = stored_ids(sessions)
    assert len(ids) == len(set(ids)) == len(sender.sent), "a frame was stored twice or an unknown one appeared"
    with sessions() as session:
        assert session.execute(select(DeadLetter)).first() is None, "a good frame was dead-lettered"


def test_broker_restarted_during_ingest(
    tmp_path: Path, engine: Engine, mosquitto_factory: Callable[..., object], jpegs: list[bytes]
) -> None:
    """Outcome: 0 lost, 0 duplicated (by frame id) across a broker restart in the middle of a stream."""
    broker = mosquitto_factory()
    host, port = broker.host, broker.port  # type: ignore[attr-defined]
    settings = settings_for(tmp_path, str(engine.url.render_as_string(hide_password=False)), host, port)
    with ingest_worker(settings, engine, DirectoryStore(tmp_path / "objects")) as (worker, sessions, _stats):
        sender = Sender(host, port, Topics(settings.mqtt.root))
        sender.start()
        try:
            for n in range(150):
                sender.send(jpegs[n % len(jpegs)])
                if n == 60:
                    broker.restart()  # type: ignore[attr-defined]  # stop (persistence saved) + start, same port
                time.sleep(0.01)
            wait_for(lambda: worker.connected, "the ingest worker to reconnect", WAIT_S)
            _check_exactly_once(sender, sessions)
        finally:
            sender.stop()


def _pg_admin(pg_url: str):  # type: ignore[no-untyped-def]
    admin = psycopg2.connect(
        make_url(pg_url).set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    )
    admin.autocommit = True
    return admin


def test_postgresql_unreachable_and_back(
    tmp_path: Path,
    pg_url: str,
    engine: Engine,
    mosquitto,
    jpegs: list[bytes],  # type: ignore[no-untyped-def]
) -> None:
    """Outcome: while the database refuses connections nothing is acknowledged (the broker keeps the frames);
    once it is back the worker reconnects by itself and every frame is stored once; none is dead-lettered."""
    settings = settings_for(tmp_path, pg_url, mosquitto.host, mosquitto.port)
    name = make_url(pg_url).database
    admin = _pg_admin(pg_url)
    with ingest_worker(settings, engine, DirectoryStore(tmp_path / "objects")) as (_worker, sessions, stats):
        sender = Sender(mosquitto.host, mosquitto.port, Topics(settings.mqtt.root))
        sender.start()
        try:
            for n in range(20):
                sender.send(jpegs[n])
            wait_for(lambda: frame_count(sessions) == 20, "the first 20 frames")
            with admin.cursor() as cur:  # as during a restart: sessions cut, new connections refused
                cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                    " AND pid <> pg_backend_pid()",
                    (name,),
                )
            for n in range(20, 60):
                sender.send(jpegs[n])
            wait_for(lambda: not sender.unacked(), "the broker to take the frames sent during the outage")
            time.sleep(3.0)  # the worker is failing and retrying now
            assert stats.snapshot().accepted == 20, "a frame was counted as stored while the database was down"
            with admin.cursor() as cur:
                cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            _check_exactly_once(sender, sessions)
        finally:
            sender.stop()
            with admin.cursor() as cur:
                cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            admin.close()


def test_s3_server_down(tmp_path: Path, mosquitto, s3, jpegs: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    """Outcome: with the S3 server unreachable no frame is acknowledged or written to the database, /readyz answers
    503 naming the store; when it is back ingest resumes and every frame's object is in the bucket."""
    bucket = s3.new_bucket()
    with TcpProxy(*s3.endpoint.split(":")[0:1], int(s3.endpoint.split(":")[1])) as proxy:
        settings = settings_for(
            tmp_path,
            f"sqlite:///{tmp_path / 'hub.db'}",
            mosquitto.host,
            mosquitto.port,
            store={
                "kind": "s3",
                "endpoint": proxy.endpoint,
                "access_key": s3.access_key,
                "secret_key": s3.secret_key,
                "bucket": bucket,
                "region": s3.region,
            },
        )
        hub = Hub(settings, http=False, ingest=True, broker=False)
        services = hub.start()
        try:
            migrate_engine = services.engine
            seed_site(migrate_engine)
            assert hub.ingest is not None and hub.ingest.client.subscribed.wait(30)
            client = TestClient(create_app(services))
            assert client.get(f"{API}/readyz").status_code == 200
            sender = Sender(mosquitto.host, mosquitto.port, Topics(settings.mqtt.root))
            sender.start()
            try:
                for n in range(10):
                    sender.send(jpegs[n])
                wait_for(lambda: frame_count(services.sessions) == 10, "the first 10 frames")
                proxy.cut()
                for n in range(10, 40):
                    sender.send(jpegs[n])
                wait_for(lambda: not sender.unacked(), "the broker to take the frames sent during the outage")
                ready = client.get(f"{API}/readyz")
                assert ready.status_code == 503, ready.text
                assert ready.json()["checks"]["store"].startswith("unreachable"), ready.text
                assert ready.json()["checks"]["database"] == "ok"
                assert frame_count(services.sessions) == 10, "a frame row was written without its object"
                assert services.ingest_stats.snapshot().accepted == 10
                proxy.restore()
                _check_exactly_once(sender, services.sessions)
                assert client.get(f"{API}/readyz").status_code == 200
                direct = S3Store(s3.endpoint, s3.access_key, s3.secret_key, bucket, region=s3.region)
                with services.sessions() as session:
                    shas = list(session.execute(select(Frame.sha256)).scalars())
                assert len(shas) == 40 and all(direct.exists(sha) for sha in shas)
            finally:
                sender.stop()
        finally:
            hub.stop()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root only): the object store's own disk, which the test fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; run the fault tests as root (CI does)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_object_store_disk_full(
    tmp_path: Path,
    engine: Engine,
    mosquitto,
    tiny_disk: Path,
    jpegs: list[bytes],  # type: ignore[no-untyped-def]
) -> None:
    """Outcome: when the store's disk is full, frames whose object cannot be written are not acknowledged and
    have no row (no row ever points at a missing object); once space is freed every frame is stored once."""
    store = DirectoryStore(tiny_disk / "objects")
    filler = tiny_disk / "filler"
    free = os.statvfs(tiny_disk).f_bavail * os.statvfs(tiny_disk).f_frsize
    filler.write_bytes(b"\0" * max(0, free - 96 * 1024))  # leave ~96 KiB: a few frames fit, then ENOSPC
    settings = settings_for(
        tmp_path, str(engine.url.render_as_string(hide_password=False)), mosquitto.host, mosquitto.port
    )
    with ingest_worker(settings, engine, store) as (_worker, sessions, stats):
        sender = Sender(mosquitto.host, mosquitto.port, Topics(settings.mqtt.root))
        sender.start()
        try:
            for n in range(40):
                sender.send(jpegs[n])
            wait_for(lambda: not sender.unacked(), "the broker to take every frame")
            time.sleep(4.0)  # the worker hits ENOSPC and retries
            stored = frame_count(sessions)
            assert stored < 40, "the disk was not full: the test proves nothing"
            with sessions() as session:
                shas = list(session.execute(select(Frame.sha256)).scalars())
            assert all(store.exists(sha) for sha in shas), "a frame row points at an object that was never written"
            assert stats.snapshot().accepted == stored
            filler.unlink()  # space freed
            _check_exactly_once(sender, sessions)
            with sessions() as session:
                frames = session.execute(select(Frame.frame_id, Frame.sha256)).all()
            for fid, sha in frames:
                assert store.get(sha) == sender_jpeg(sender, fid)
        finally:
            sender.stop()


def sender_jpeg(sender: Sender, frame_id: str) -> bytes:
    from camfleet_contract.envelope import decode_frame

    return decode_frame(sender.sent[frame_id])[1]


def test_nearly_full_disk_never_dead_letters_a_good_frame(
    tmp_path: Path,
    engine: Engine,
    mosquitto,  # type: ignore[no-untyped-def]
    tiny_disk: Path,
    jpegs: list[bytes],
) -> None:
    """Outcome: with room for the 4 KiB dead-letter prefix but not for a frame, the worker keeps retrying the frame
    (a storage error is not the message's fault) instead of acknowledging it as a dead letter."""
    big = [j for j in jpegs if len(j) >= 12_000][:3]
    store = DirectoryStore(tiny_disk / "objects")
    (tiny_disk / "objects" / "dead").mkdir()  # the dead-letter folders exist, as on a hub that ran a while
    filler = tiny_disk / "filler"
    stat = os.statvfs(tiny_disk)
    filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - 8 * 1024))  # 8 KiB left
    settings = settings_for(tmp_path, engine.url.render_as_string(hide_password=False), mosquitto.host, mosquitto.port)
    with ingest_worker(settings, engine, store) as (_worker, sessions, stats):
        sender = Sender(mosquitto.host, mosquitto.port, Topics(settings.mqtt.root))
        sender.start()
        try:
            for jpeg in big:
                sender.send(jpeg)
            wait_for(lambda: not sender.unacked(), "the broker to take every frame")
            time.sleep(12.0)  # past three failed attempts of the batch and of the first single frame
            assert stats.snapshot().rejected_total == 0, stats.snapshot()
            filler.unlink()
            _check_exactly_once(sender, sessions)
        finally:
            sender.stop()
