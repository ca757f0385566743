"""Backup and restore (``camfleet-hub backup`` / ``restore``): a hub on PostgreSQL + S3 with a dataset and a
promoted model is backed up by the CLI, restored into a new database, a new bucket and a new data folder, and the
restored hub serves the same images (count and sha256, bytes included), the same model versions and bundles, and
the same fleet public key. Outcome in docs/RELIABILITY.md ('Backup and restore')."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from camfleet_contract.signing import generate_signing_key
from camfleet_hub.api import create_app
from camfleet_hub.app import Hub
from camfleet_hub.core.config import load_settings
from tests.hub.api.apihelpers import bundle_zip, import_dataset

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"
ADMIN = "admin"


def _config(folder: Path, db_url: str, s3: Any, bucket: str, mqtt: Any, root: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hub.toml"
    path.write_text(
        f'data_dir = "{folder / "data"}"\n'
        f'[db]\nurl = "{db_url}"\n'
        f'[store]\nkind = "s3"\nendpoint = "{s3.endpoint}"\naccess_key = "{s3.access_key}"\n'
        f'secret_key = "{s3.secret_key}"\nbucket = "{bucket}"\nregion = "{s3.region}"\n'
        f'[mqtt]\nembedded = false\nhost = "{mqtt.host}"\nport = {mqtt.port}\nroot = "{root}"\n'
        f'client_id = "bk-{uuid.uuid4().hex[:8]}"\n'
        f'[ingest]\nenabled = false\n[auth]\nadmin_username = "{ADMIN}"\nadmin_password = "admin-password-1"\n'
    )
    return path


@contextmanager
def _running(config: Path) -> Iterator[TestClient]:
    from camfleet_hub.auth import callers, tokens, users
    from camfleet_hub.auth.models import Role

    hub = Hub(load_settings(config), http=False, ingest=False, broker=False)
    services = hub.start()
    try:
        with services.sessions() as session:
            admin = users.get_user_by_name(session, ADMIN)
            _row, token = tokens.create_token(session, callers.caller_of_user(session, admin), "t", None, Role.ADMIN)
        with TestClient(create_app(services), headers={"Authorization": f"Bearer {token}"}) as client:
            yield client
    finally:
        hub.stop()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "camfleet_hub", *args], capture_output=True, text=True, timeout=300)


def _state(client: TestClient) -> dict[str, Any]:
    """What a user of the hub sees: images (with their bytes' hashes), models (with their bundles'), the key."""
    images = client.get(f"{CLF}/images").json()
    blobs = {}
    for image in images:
        r = client.get(image["content_url"])
        assert r.status_code == 200, r.text
        blobs[image["sha256"]] = hashlib.sha256(r.content).hexdigest()
    models = []
    for m in client.get(f"{CLF}/models").json():
        bundle = client.get(f"{API}/models/{m['id']}/bundle").content
        models.append((m["version"], m["status"], m["sha256"], hashlib.sha256(bundle).hexdigest()))
    return {
        "images": sorted((i["sha256"], i["group"], i["status"]) for i in images),
        "blobs": blobs,
        "models": sorted(models),
        "fleet_key": client.get(f"{API}/keys/fleet").json(),
    }


@pytest.fixture
def second_pg(pg_url: str) -> Iterator[str]:
    """Another empty PostgreSQL database next to ``pg_url`` (the restore target)."""
    url = make_url(pg_url)
    name = f"cfrestore_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(url.set(drivername="postgresql", database="postgres").render_as_string(False))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def test_backup_and_restore_into_a_new_database_and_bucket(
    tmp_path: Path,
    pg_url: str,
    second_pg: str,
    s3,
    mosquitto,
    clothing_subset: Path,  # type: ignore[no-untyped-def]
) -> None:
    root = f"cf{uuid.uuid4().hex[:8]}"
    old = _config(tmp_path / "old", pg_url, s3, s3.new_bucket(), mosquitto, root)
    with _running(old) as client:
        import_dataset(client, clothing_subset, per_class=3)
        for seed in (1, 2):
            job = client.post(f"{CLF}/jobs", json={}).json()["id"]
            assert client.post(f"{API}/jobs/claim", json={"worker": "t1"}).json()["job"]["id"] == job
            data = bundle_zip(tmp_path, generate_signing_key(), model_seed=seed)
            up = client.post(f"{API}/jobs/{job}/result", files={"file": ("b.zip", data, "application/zip")})
            assert up.status_code == 201, up.text
        first = client.get(f"{CLF}/models").json()
        v1 = next(m for m in first if m["version"] == 1)
        assert client.post(f"{API}/models/{v1['id']}/promote").status_code == 200
        before = _state(client)
    assert len(before["images"]) == 9 and len(before["models"]) == 2

    out = tmp_path / "backup"
    done = _cli("backup", "--config", str(old), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "database.dump").is_file() and (out / "fleet.key").stat().st_mode & 0o077 == 0

    new = _config(tmp_path / "new", second_pg, s3, s3.new_bucket(), mosquitto, root)
    done = _cli("restore", "--config", str(new), "--from", str(out))
    assert done.returncode == 0, done.stderr
    with _running(new) as client:
        after = _state(client)
    assert after == before
    assert all(sha == got for sha, got in after["blobs"].items())  # every image's bytes came back intact

    # A second restore over the now non-empty database is refused, naming the problem.
    again = _cli("restore", "--config", str(new), "--from", str(out))
    assert again.returncode == 1 and "already has" in again.stderr and "Traceback" not in again.stderr


def test_restore_refuses_a_damaged_object(tmp_path: Path, s3, mosquitto) -> None:  # type: ignore[no-untyped-def]
    root = f"cf{uuid.uuid4().hex[:8]}"
    old = _config(tmp_path / "old", f"sqlite:///{tmp_path / 'old.db'}", s3, s3.new_bucket(), mosquitto, root)
    with _running(old) as client:
        client.post(f"{API}/sites", json={"name": "shop"})
    hub_store = load_settings(old)
    from camfleet_hub.core.store.factory import make_store

    make_store(hub_store.store).put(b"some image bytes")
    out = tmp_path / "backup"
    assert _cli("backup", "--config", str(old), "--out", str(out)).returncode == 0
    damaged = next((out / "objects").rglob("*/*/*/*"))
    damaged.write_bytes(b"not what was stored")
    new = _config(tmp_path / "new", f"sqlite:///{tmp_path / 'new.db'}", s3, s3.new_bucket(), mosquitto, root)
    done = _cli("restore", "--config", str(new), "--from", str(out))
    assert done.returncode == 1 and "damaged" in done.stderr, done.stderr
