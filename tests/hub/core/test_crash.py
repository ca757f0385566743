"""Crash test: the ingest process dies between the object write and the DB commit/ack; nothing is lost or doubled."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hubcore_helpers import frame_payload, seed_site, unique, wait_for
from sqlalchemy import Engine, func, select

from camfleet_contract.envelope import decode_frame
from camfleet_hub.core.comms.mqtt import MqttClient
from camfleet_hub.core.db.session import make_sessionmaker
from camfleet_hub.core.store import DirectoryStore
from camfleet_hub.datasets.models import Blob, Frame, Image
from tests.support import crash_ingest

N_FRAMES = 20
WAIT_S = 60.0


def _config(tmp_path: Path, db_url: str, host: str, port: int, root: str, client_id: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(
        f"""
data_dir = "{tmp_path / "hub"}"
[mqtt]
embedded = false
host = "{host}"
port = {port}
root = "{root}"
client_id = "{client_id}"
[db]
url = "{db_url}"
[store]
kind = "dir"
path = "objects"
[ingest]
batch_size = 8
"""
    )
    return path


def _start(config: Path, log: Path, crash: bool) -> subprocess.Popen[bytes]:
    """The ingest process; with `crash`, the test's wrapper that dies after a batch's first object write."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMFLEET_")}
    entry = [str(crash_ingest.__file__)] if crash else ["-m", "camfleet_hub"]
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *entry, "ingest", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def _wait_subscribed(proc: subprocess.Popen[bytes], log: Path, runs: int) -> None:
    """Wait until the process logged its SUBACK for the ``runs``-th time (so the broker queues for it)."""

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"ingest exited early with {proc.returncode}:\n{log.read_text()[-3000:]}")
        return log.read_text().count("subscribed (granted") >= runs

    wait_for(ready, "the ingest process to subscribe", WAIT_S)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            pytest.fail("ingest did not stop on SIGTERM")
    return int(proc.returncode)


def test_crash_between_store_and_ack_loses_and_duplicates_nothing(
    tmp_path: Path,
    engine: Engine,
    db_url: str,
    mosquitto,
    jpegs: list[bytes],  # type: ignore[no-untyped-def]
) -> None:
    seed_site(engine)
    sessions = make_sessionmaker(engine)
    root = unique("cf")
    config = _config(
        tmp_path,
        engine.url.render_as_string(hide_password=False),
        mosquitto.host,
        mosquitto.port,
        root,
        unique("crash-ingest-"),
    )
    log = tmp_path / "ingest.log"

    def frames_in_db() -> int:
        with sessions() as s:
            return int(s.execute(select(func.count()).select_from(Frame)).scalar_one())

    payloads = [frame_payload(jpegs[i % len(jpegs)], "shop", "cam1") for i in range(N_FRAMES)]
    published = {decode_frame(p)[0].frame_id for p in payloads}
    proc = _start(config, log, crash=True)
    try:
        _wait_subscribed(proc, log, runs=1)
        pub = MqttClient(mosquitto.host, mosquitto.port, unique("crash-pub-"))
        assert pub.start(10)
        infos = [pub.publish(f"{root}/v1/shop/cam1/frame", p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(10)
        pub.stop()
        assert proc.wait(timeout=WAIT_S) == crash_ingest.EXIT_CODE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    store = DirectoryStore(tmp_path / "hub" / "objects")
    assert "fault injection" in log.read_text()
    assert frames_in_db() == 0  # died after the object write, before the commit
    assert any(store.exists(sha) for sha in _shas(jpegs))  # the object was written

    proc = _start(config, log, crash=False)
    try:
        wait_for(lambda: frames_in_db() >= N_FRAMES, f"{N_FRAMES} frames after the restart", WAIT_S)
    finally:
        assert _stop(proc) == 0

    with sessions() as s:
        frame_ids = list(s.execute(select(Frame.frame_id)).scalars())
        shas = set(s.execute(select(Frame.sha256)).scalars())
        blobs = int(s.execute(select(func.count()).select_from(Blob)).scalar_one())
        images = int(s.execute(select(func.count()).select_from(Image)).scalar_one())
    assert len(frame_ids) == N_FRAMES == len(set(frame_ids))
    assert set(frame_ids) == published
    assert shas == _shas(jpegs)
    assert blobs == len(shas) and images == 2 * len(shas)  # two classifiers, one image per distinct JPEG
    for sha in shas:
        assert store.exists(sha)


def _shas(jpegs: list[bytes]) -> set[str]:
    return {hashlib.sha256(j).hexdigest() for j in jpegs}
