"""The object store interface: content-addressed bytes under a prefix (``blobs/ab/cd/<sha256>``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

DEFAULT_PREFIX = "blobs"
DEAD_PREFIX = "dead"

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class ObjectNotFound(KeyError):
    """Raised by ``get`` when no object has that hash under that prefix."""


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``: the key of an object in every store."""
    return hashlib.sha256(data).hexdigest()


def parse_key(key: str) -> tuple[str, str] | None:
    """``(prefix, sha)`` of a key made by ``object_key``; None for anything else (temp files, foreign objects)."""
    parts = key.split("/")
    if len(parts) != 4:
        return None
    prefix, a, b, sha = parts
    if not (_PREFIX_RE.match(prefix) and _SHA_RE.match(sha) and a == sha[:2] and b == sha[2:4]):
        return None
    return prefix, sha


def object_key(sha: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Relative key of an object, e.g. ``blobs/ab/cd/abcd...``; validates both parts (they become paths)."""
    if not isinstance(sha, str) or not _SHA_RE.match(sha):
        raise ValueError(f"sha256 must be 64 lowercase hex characters, got {sha!r}")
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"prefix must match {_PREFIX_RE.pattern}, got {prefix!r}")
    return f"{prefix}/{sha[:2]}/{sha[2:4]}/{sha}"


@runtime_checkable
class ObjectStore(Protocol):
    """Where the hub keeps image bytes, bundles and dead-letter payloads.

    ``put`` is idempotent (same bytes → same key, stored once) and atomic (a reader never sees half an object).
    Every method may be called from several threads at once: the ingest worker puts a batch's objects concurrently.
    """

    def put(self, data: bytes, prefix: str = DEFAULT_PREFIX) -> str:
        """Store ``data`` under its sha256 and return that hash."""
        ...

    def get(self, sha: str, prefix: str = DEFAULT_PREFIX) -> bytes:
        """Return the object's bytes; raises ``ObjectNotFound`` when missing."""
        ...

    def exists(self, sha: str, prefix: str = DEFAULT_PREFIX) -> bool:
        """Tell whether the object is stored."""
        ...

    def delete(self, sha: str, prefix: str = DEFAULT_PREFIX) -> None:
        """Remove the object; deleting a missing object is not an error."""
        ...

    def iter_objects(self) -> Iterator[tuple[str, str]]:
        """Every stored object as ``(prefix, sha)``, in no particular order (for backups and retention)."""
        ...
