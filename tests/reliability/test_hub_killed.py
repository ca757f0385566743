"""The hub SIGKILLed during a model upload and during a promote (a real ``camfleet-hub serve`` on PostgreSQL).

To kill it at a known point without hooks in the hub, the test holds a PostgreSQL lock that the hub's transaction
needs (a SHARE lock on ``model_versions`` blocks the upload's INSERT; a row lock on the production version blocks
the promote's UPDATE), waits until the hub's connection is waiting on it, then SIGKILLs the process. Outcome: no
half-registered model (no row, the job not marked done), the production version unchanged, the retained
announcement — what agents follow — still the old version; after a restart the same upload and promote succeed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from sqlalchemy.engine import make_url

from camfleet_contract.signing import generate_signing_key
from tests.hub.api.apihelpers import RetainedReader, bundle_zip, import_dataset
from tests.support.polling import wait_for

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"


class HubProcess:
    """``python -m camfleet_hub serve`` on a config file; start, SIGKILL, start again."""

    def __init__(self, tmp: Path, db_url: str, mosquitto: Any, port: int) -> None:
        self.root = f"cf{uuid.uuid4().hex[:8]}"
        self.config = tmp / "hub.toml"
        self.config.write_text(
            f'data_dir = "{tmp / "data"}"\n[http]\nport = {port}\n[db]\nurl = "{db_url}"\n'
            f'[mqtt]\nembedded = false\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\nroot = "{self.root}"\n'
            f'client_id = "hk-{uuid.uuid4().hex[:8]}"\n[ingest]\nenabled = false\n'
            '[auth]\nadmin_password = "admin-password-1"\n'
        )
        self.log = tmp / "hub.log"
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        done = subprocess.run(
            [sys.executable, "-m", "camfleet_hub", "token", "create", "--config", str(self.config), "--name", "t",
             "--role", "admin"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        self.token = done.stdout.strip().splitlines()[-1]

    def start(self) -> httpx.Client:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "camfleet_hub", "serve", "--config", str(self.config)], stdout=out, stderr=out
            )

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                return httpx.get(f"{self.url}{API}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, "the hub to be ready", 90)
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def admin(pg_url: str) -> Iterator[Any]:
    """A second connection to the hub's database, for taking locks."""
    conn = psycopg2.connect(make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _waiting_on_lock(admin_url_conn: Any, db: str) -> bool:
    with psycopg2.connect(admin_url_conn) as probe, probe.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (db,),
        )
        return int(cur.fetchone()[0]) > 0


def _in_background(fn: Any) -> threading.Thread:
    def run() -> None:
        try:
            fn()
        except httpx.TransportError:
            pass  # the hub died under the request: expected

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _announced_version(retained: RetainedReader, hub: HubProcess) -> str | None:
    snap = retained.snapshot(f"{hub.root}/v1", "shop")
    return json.loads(snap["clothes"])["version"] if "clothes" in snap else None


def test_hub_killed_during_upload_and_promote(
    tmp_path: Path,
    pg_url: str,
    admin: Any,
    mosquitto,
    clothing_subset: Path,
    free_port,  # type: ignore[no-untyped-def]
) -> None:
    hub = HubProcess(tmp_path, pg_url, mosquitto, free_port())
    retained = RetainedReader(mosquitto.host, mosquitto.port)
    db = make_url(pg_url).database
    probe_url = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    key = generate_signing_key()
    try:
        c = hub.start()
        import_dataset(c, clothing_subset, per_class=2)

        def claimed_job() -> int:
            job = c.post(f"{CLF}/jobs", json={}).json()["id"]
            assert c.post(f"{API}/jobs/claim", json={"worker": "t1"}).json()["job"]["id"] == job
            return int(job)

        def upload(client: httpx.Client, job: int, seed: int) -> httpx.Response:
            data = bundle_zip(tmp_path, key, model_seed=seed)
            return client.post(f"{API}/jobs/{job}/result", files={"file": ("b.zip", data, "application/zip")})

        v1 = upload(c, claimed_job(), 1).json()
        assert c.post(f"{API}/models/{v1['id']}/promote").status_code == 200
        wait_for(lambda: _announced_version(retained, hub) == "1", "v1 announced")

        # 1. Killed while registering an upload: the INSERT of the new version waits on our lock.
        job2 = claimed_job()
        with admin.cursor() as cur:
            cur.execute("LOCK TABLE model_versions IN SHARE MODE")
        _in_background(lambda: upload(c, job2, 2))
        wait_for(lambda: _waiting_on_lock(probe_url, db), "the upload to wait on the lock")
        hub.kill()
        admin.rollback()
        c = hub.start()
        models = c.get(f"{CLF}/models").json()
        assert [(m["version"], m["status"]) for m in models] == [(1, "production")], models
        assert c.get(f"{API}/jobs/{job2}").json()["status"] == "running"  # not succeeded: no result recorded
        assert _announced_version(retained, hub) == "1"
        v2 = upload(c, job2, 2)  # the trainer's retry succeeds after the restart
        assert v2.status_code == 201, v2.text
        v2_id = v2.json()["id"]

        # 2. Killed while promoting v2: the UPDATE retiring v1 waits on our row lock.
        with admin.cursor() as cur:
            cur.execute("SELECT id FROM model_versions WHERE id = %s FOR UPDATE", (v1["id"],))
        _in_background(lambda: c.post(f"{API}/models/{v2_id}/promote"))
        wait_for(lambda: _waiting_on_lock(probe_url, db), "the promote to wait on the lock")
        hub.kill()
        admin.rollback()
        c = hub.start()
        statuses = {m["version"]: m["status"] for m in c.get(f"{CLF}/models").json()}
        assert statuses == {1: "production", 2: "candidate"}, statuses
        assert _announced_version(retained, hub) == "1"  # agents keep v1
        assert c.post(f"{API}/models/{v2_id}/promote").status_code == 200
        wait_for(lambda: _announced_version(retained, hub) == "2", "v2 announced after the restart")
    finally:
        hub.stop()
