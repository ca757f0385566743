"""Shared by bench/soak.py and bench/fleet_sim.py: simulated agents on asyncio and the services they talk to.

- ``AsyncPublisher``: a minimal MQTT 3.1.1 QoS-1 publisher on asyncio streams (CONNECT, PUBLISH, PUBACK), so
  one process can hold thousands of agent connections without a thread each. It only publishes, as agents do.
- ``Services``: a private Mosquitto, an S3 server (SeaweedFS, what docker-compose runs, or the moto emulator), a
  fresh PostgreSQL database and one or more ``camfleet-hub ingest`` processes on them (several split the frames
  through an MQTT shared subscription), with a site and its cameras; ``rss_mb()`` samples the hubs' memory.
- ``unique_jpeg``: a JPEG made distinct by a comment segment after SOI (still a valid image), so every frame is
  its own object, as real camera frames are.
"""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED_DATA, free_port, mosquitto, wait_port  # noqa: E402

sys.path.insert(0, str(REPO))  # tests.support: the one SeaweedFS launcher
from tests.support.seaweed import start_weed  # noqa: E402

SMOKE_CLIP = REPO / "tests" / "data" / "video" / "plaza.avi"
PG_ADMIN = os.environ.get("CAMFLEET_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
SITE, AGENT_PREFIX = "soak", "sim"


def clip_jpegs(count: int, smoke: bool, width: int = 640) -> list[bytes]:
    """``count`` JPEGs of the plaza clip at ``width`` px (the shared clip, or the tests' one for --smoke)."""
    clip = SMOKE_CLIP if smoke else SHARED_DATA / "video" / "plaza.avi"
    if not clip.exists():
        clip = SMOKE_CLIP  # the carried clip is the same scene, shorter
    out: list[bytes] = []
    cap = cv2.VideoCapture(str(clip))
    while len(out) < count:
        ok, bgr = cap.read()
        if not ok:
            if not out:
                raise SystemExit(f"cannot read frames from {clip}")
            cap.release()
            cap = cv2.VideoCapture(str(clip))
            continue
        bgr = cv2.resize(bgr, (width, round(bgr.shape[0] * width / bgr.shape[1])), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])
        out.append(buf.tobytes())
    cap.release()
    return out


def unique_jpeg(jpeg: bytes, tag: str) -> bytes:
    """The same image with a COM segment naming ``tag`` right after SOI: other bytes, same pixels."""
    comment = tag.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


# --------------------------------------------------------------------------- MQTT on asyncio


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    data = s.encode()
    return struct.pack(">H", len(data)) + data


class AsyncPublisher:
    """One agent's MQTT connection: QoS-1 publishes whose ``await`` returns at the broker's PUBACK."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._next_id = 0
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        variable = _string("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 0)  # 3.1.1, clean session, no keepalive
        body = variable + _string(self.client_id)
        self._writer.write(bytes([0x10]) + _remaining_length(len(body)) + body)
        await self._writer.drain()
        head = await self._reader.readexactly(4)
        if head[0] != 0x20 or head[3] != 0:
            raise ConnectionError(f"{self.client_id}: CONNACK refused ({head!r})")
        self._task = asyncio.create_task(self._read_acks())

    async def _read_acks(self) -> None:
        assert self._reader is not None
        try:
            while True:
                head = await self._reader.readexactly(2)
                body = await self._reader.readexactly(head[1])  # PUBACK and PINGRESP are short
                if head[0] == 0x40:
                    future = self._pending.pop(struct.unpack(">H", body[:2])[0], None)
                    if future is not None and not future.done():
                        future.set_result(None)
        except (asyncio.IncompleteReadError, ConnectionError):
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"{self.client_id}: connection lost"))

    async def publish(self, topic: str, payload: bytes) -> None:
        assert self._writer is not None
        self._next_id = self._next_id % 65535 + 1
        pid = self._next_id
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[pid] = future
        body = _string(topic) + struct.pack(">H", pid) + payload
        self._writer.write(bytes([0x32]) + _remaining_length(len(body)) + body)
        await self._writer.drain()
        await future

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.write(b"\xe0\x00")  # DISCONNECT
            self._writer.close()
        if self._task is not None:
            self._task.cancel()


# --------------------------------------------------------------------------- services


S3_SERVERS = ("seaweedfs", "moto")
SHARED_GROUP = "camfleet-hub"
BUCKET = "camfleet"


@dataclass
class Services:
    mqtt_port: int
    db_url: str
    hub_pids: list[int]
    workdir: Path
    s3: str = "seaweedfs"

    def rss_each_mb(self) -> list[float]:
        """Resident memory of each hub ingest process."""
        import psutil

        return [psutil.Process(pid).memory_info().rss / 1024**2 for pid in self.hub_pids]

    def rss_mb(self) -> float:
        """Resident memory of the hub ingest processes together."""
        return sum(self.rss_each_mb())

    def describe(self) -> str:
        hubs = len(self.hub_pids)
        procs = "one 'camfleet-hub ingest' process" if hubs == 1 else f"{hubs} 'camfleet-hub ingest' processes"
        shared = f" (MQTT shared subscription $share/{SHARED_GROUP})" if hubs > 1 else ""
        return f"PostgreSQL + S3 ({self.s3}), {procs}{shared}"


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg2

    conn = psycopg2.connect(PG_ADMIN, connect_timeout=5)
    conn.autocommit = True
    return conn


@contextmanager
def _database() -> Iterator[str]:
    name = f"cfbench_{uuid.uuid4().hex[:10]}"
    conn = _pg_admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.close()


@contextmanager
def _moto(workdir: Path) -> Iterator[int]:
    port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    with open(workdir / "moto.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log, env=env
        )
    try:
        wait_port(port, 60)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def _seaweedfs(workdir: Path) -> Iterator[int]:
    """SeaweedFS (tests/support/seaweed.py) with the identity bench/bench; yields the S3 port once a write goes
    through."""
    try:
        proc, port = start_weed(workdir / "weed", "bench", "bench", volume_mb=256)
    except FileNotFoundError as exc:
        raise SystemExit(f"{exc}, or use --s3 moto") from None
    try:
        wait_port(port, 60)
        from camfleet_hub.core.store.s3 import S3Store

        deadline = time.monotonic() + 60
        while True:  # the S3 port opens before a volume server has registered: ready once a write goes through
            try:
                # into the hub's bucket: SeaweedFS allocates a bucket's first volumes on its first write (~1 s),
                # which would otherwise land on the first frames measured
                S3Store(f"127.0.0.1:{port}", "bench", "bench", BUCKET).put(b"ok")
                break
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet" until the deadline
                if time.monotonic() > deadline or proc.poll() is not None:
                    tail = (workdir / "weed" / "weed.log").read_text()[-3000:]
                    raise SystemExit(f"seaweedfs took no write ({exc}):\n{tail}") from None
                time.sleep(0.2)
        yield port
    finally:
        proc.kill()  # weed server lingers after SIGTERM (its parts keep retrying each other); the data is throwaway
        proc.wait(timeout=10)


def _seed(db_url: str, cameras: list[str]) -> None:
    from camfleet_hub.core.db.session import make_engine, make_sessionmaker, migrate
    from camfleet_hub.datasets.models import Camera, Site

    engine = make_engine(db_url)
    try:
        migrate(engine)
        with make_sessionmaker(engine)() as session:
            site = Site(name=SITE)
            session.add(site)
            session.flush()
            session.add_all(Camera(site_id=site.id, name=c) for c in cameras)
            session.commit()
    finally:
        engine.dispose()


@contextmanager
def services(cameras: list[str], batch_size: int = 128, s3: str = "seaweedfs", hubs: int = 1) -> Iterator[Services]:
    """Mosquitto + an S3 server (``s3``: seaweedfs or moto) + a new PostgreSQL database + ``hubs`` ingest processes
    (more than one: a shared subscription splits the frames between them), torn down after."""
    if s3 not in S3_SERVERS:
        raise ValueError(f"s3 must be one of {S3_SERVERS}, got {s3!r}")
    with tempfile.TemporaryDirectory(prefix="cfbench-") as tmp, mosquitto() as mqtt_port:
        workdir = Path(tmp)
        server = _seaweedfs if s3 == "seaweedfs" else _moto
        with _database() as db_url, server(workdir) as s3_port:
            _seed(db_url, cameras)
            procs: list[subprocess.Popen[bytes]] = []
            logs = []
            try:
                for i in range(hubs):
                    shared = f'shared_group = "{SHARED_GROUP}"\n' if hubs > 1 else ""
                    cfg = workdir / f"hub-{i}.toml"
                    cfg.write_text(
                        f'data_dir = "{workdir / "hub"}"\n[db]\nurl = "{db_url}"\n'
                        f'[store]\nkind = "s3"\nendpoint = "127.0.0.1:{s3_port}"\naccess_key = "bench"\n'
                        f'secret_key = "bench"\nbucket = "{BUCKET}"\nregion = "us-east-1"\n'
                        f'[mqtt]\nembedded = false\nport = {mqtt_port}\nclient_id = "bench-ingest-{i}"\n{shared}'
                        f"[ingest]\nbatch_size = {batch_size}\nqueue_size = 4096\n"
                        '[auth]\nadmin_password = "bench-admin-password"\n'
                    )
                    logs.append(open(workdir / f"hub-{i}.log", "wb"))  # noqa: SIM115 - closed below
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "camfleet_hub", "ingest", "--config", str(cfg)],
                            stdout=logs[-1],
                            stderr=logs[-1],
                        )
                    )
                deadline = time.monotonic() + 120
                for i, proc in enumerate(procs):
                    log_path = workdir / f"hub-{i}.log"
                    while b"ingest running" not in log_path.read_bytes():
                        if proc.poll() is not None or time.monotonic() > deadline:
                            raise SystemExit(f"hub {i} did not start:\n{log_path.read_text()[-3000:]}")
                        time.sleep(0.2)
                time.sleep(1.0)  # subscriptions in place
                yield Services(mqtt_port, db_url, [p.pid for p in procs], workdir, s3)
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait(timeout=60)
                for log in logs:
                    log.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]
