"""Pick and build the object store the settings ask for."""

from __future__ import annotations

from pathlib import Path

from camfleet_hub.core.config import StoreSettings, reveal
from camfleet_hub.core.store.base import ObjectStore


def make_store(settings: StoreSettings, base_dir: Path | None = None) -> ObjectStore:
    """A DirectoryStore (``path`` relative to ``base_dir``) or an S3Store, per ``settings.kind``."""
    if settings.kind == "dir":
        from camfleet_hub.core.store.directory import DirectoryStore

        path = Path(settings.path).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return DirectoryStore(path)
    if settings.kind == "s3":
        from camfleet_hub.core.store.s3 import S3Store

        return S3Store(
            settings.endpoint,
            reveal(settings.access_key),
            reveal(settings.secret_key),
            settings.bucket,
            secure=settings.secure,
            region=settings.region,
        )
    raise ValueError(f"store.kind must be 'dir' or 's3', got {settings.kind!r}")
