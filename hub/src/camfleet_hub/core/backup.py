"""Backup and restore of everything a hub needs: the SQL database, the object store and the fleet signing key.

``camfleet-hub backup --config hub.toml --out DIR`` writes::

    DIR/manifest.json     hub version, schema revision, database kind, object count/bytes, fleet key fingerprint
    DIR/database.dump     pg_dump custom format (PostgreSQL)  |  DIR/database.sqlite (SQLite, online backup API)
    DIR/objects/<prefix>/ab/cd/<sha256>   every object of the store (directory or S3)
    DIR/fleet.key         the fleet private key (0600): agents pin its public key, so a hub without it is a new fleet

``camfleet-hub restore --config new.toml --from DIR`` loads it into the *empty* database and store that
``new.toml`` names (refused when the database already has tables or a different key exists), checks every
object's sha256 on the way in, then upgrades the schema if the backup is older than this hub.

Order: the database is dumped first, then the objects. Objects are content-addressed and written before the row
that names them is committed, so every object the dump refers to already exists when the copy starts; objects
added during the copy are harmless extras.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from camfleet_contract.signing import fingerprint, load_or_create_key, public_key_of
from camfleet_hub import __version__
from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.db.session import make_engine, migrate
from camfleet_hub.core.store.base import ObjectStore, object_key, sha256_hex
from camfleet_hub.core.store.factory import make_store

MANIFEST = "manifest.json"
PG_DUMP = "database.dump"
SQLITE_COPY = "database.sqlite"
OBJECTS = "objects"
KEY_FILE = "fleet.key"
FORMAT = 1


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says what to fix."""


@dataclass(frozen=True)
class BackupManifest:
    format: int
    hub_version: str
    created_at: str
    database: str  # "postgresql" | "sqlite"
    schema_revision: str | None
    objects: int
    object_bytes: int
    fleet_key_fingerprint: str


def _libpq_url(url: str) -> str:
    """The SQLAlchemy URL as libpq understands it (no ``+driver``), password included."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    finally:
        engine.dispose()


def _run(cmd: list[str], what: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise BackupError(f"{cmd[0]} not found: install the PostgreSQL client tools (postgresql-client)") from None
    if done.returncode != 0:
        raise BackupError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def backup(settings: HubSettings, out: Path) -> BackupManifest:
    """Write a backup of the configured hub into the new or empty folder ``out``."""
    if out.exists() and any(out.iterdir()):
        raise BackupError(f"--out {out} is not empty; give a new folder")
    key_path = settings.key_path()
    if not key_path.is_file():
        raise BackupError(f"no fleet key at {key_path}: is this the hub's config (signing.key_path, data_dir)?")
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)  # it holds the signing key
    url = settings.db_url()
    kind = make_url(url).get_backend_name()
    revision = _revision(url)
    if kind == "postgresql":
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", "-f", str(out / PG_DUMP),
              _libpq_url(url)], "pg_dump")  # fmt: skip
    elif kind == "sqlite":
        source = make_url(url).database or ""
        with sqlite3.connect(source) as src, sqlite3.connect(out / SQLITE_COPY) as dst:
            src.backup(dst)  # consistent even while the hub writes (WAL)
    else:
        raise BackupError(f"db.url: backups support postgresql and sqlite, not {kind!r}")
    store = make_store(settings.store, base_dir=settings.data_dir)
    count = size = 0
    for prefix, sha in store.iter_objects():
        data = store.get(sha, prefix)
        target = out / OBJECTS / object_key(sha, prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        count, size = count + 1, size + len(data)
    private_key = key_path.read_text().strip()
    (out / KEY_FILE).write_text(private_key + "\n")
    os.chmod(out / KEY_FILE, 0o600)
    manifest = BackupManifest(
        format=FORMAT,
        hub_version=__version__,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        database=kind,
        schema_revision=revision,
        objects=count,
        object_bytes=size,
        fleet_key_fingerprint=fingerprint(public_key_of(private_key)),
    )
    (out / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def read_manifest(folder: Path) -> BackupManifest:
    try:
        data = json.loads((folder / MANIFEST).read_text())
        manifest = BackupManifest(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise BackupError(f"--from {folder}: no readable {MANIFEST} ({exc})") from None
    if manifest.format != FORMAT:
        raise BackupError(f"--from {folder}: backup format {manifest.format}, this hub reads format {FORMAT}")
    return manifest


def _check_empty_database(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = inspect(conn).get_table_names()
    finally:
        engine.dispose()
    if tables:
        raise BackupError(
            f"db.url: the target database already has {len(tables)} tables ({', '.join(sorted(tables)[:5])}…); "
            "restore into a new, empty database"
        )


def _restore_objects(folder: Path, store: ObjectStore) -> tuple[int, int]:
    root = folder / OBJECTS
    count = size = 0
    for path in sorted(root.glob("*/*/*/*")) if root.is_dir() else []:
        prefix, sha = path.relative_to(root).parts[0], path.name
        data = path.read_bytes()
        if sha256_hex(data) != sha:
            raise BackupError(f"object {path.relative_to(folder)} is damaged (its sha256 does not match its name)")
        store.put(data, prefix)
        count, size = count + 1, size + len(data)
    return count, size


def restore(settings: HubSettings, folder: Path) -> BackupManifest:
    """Load a backup into the empty database, store and key path that ``settings`` name."""
    manifest = read_manifest(folder)
    private_key = (folder / KEY_FILE).read_text().strip()
    if fingerprint(public_key_of(private_key)) != manifest.fleet_key_fingerprint:
        raise BackupError(f"--from {folder}: {KEY_FILE} does not match the fingerprint in {MANIFEST}")
    key_path = settings.key_path()
    if key_path.exists() and key_path.read_text().strip() != private_key:
        raise BackupError(
            f"signing.key_path {key_path} already holds a different fleet key; move it away first "
            "(agents trust the backed-up key, not that one)"
        )
    url = settings.db_url()
    kind = make_url(url).get_backend_name()
    if kind != manifest.database:
        raise BackupError(f"db.url is {kind} but the backup holds a {manifest.database} database")
    if kind == "sqlite":
        target = Path(make_url(url).database or "")
        if target.exists() and target.stat().st_size > 0:
            _check_empty_database(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / SQLITE_COPY, target)
    else:
        _check_empty_database(url)
        _run(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "-d", _libpq_url(url),
              str(folder / PG_DUMP)], "pg_restore")  # fmt: skip
    count, size = _restore_objects(folder, make_store(settings.store, base_dir=settings.data_dir))
    if (count, size) != (manifest.objects, manifest.object_bytes):
        raise BackupError(f"restored {count} objects ({size} bytes) but the backup lists {manifest.objects}")
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_text(private_key + "\n")
    os.chmod(key_path, 0o600)
    assert load_or_create_key(key_path) == private_key
    engine = make_engine(url)
    try:
        migrate(engine)  # a backup from an older hub is upgraded like any database
    finally:
        engine.dispose()
    return manifest
