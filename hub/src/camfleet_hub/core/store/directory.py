"""Content-addressed object store in a local directory (the embedded default)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from camfleet_hub.core.store.base import DEFAULT_PREFIX, ObjectNotFound, object_key, parse_key, sha256_hex


class DirectoryStore:
    """Objects as files ``<root>/<prefix>/ab/cd/<sha256>``, written to a temp file, fsynced, then renamed."""

    def __init__(self, path: str | Path) -> None:
        self.root = Path(path)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    def _path(self, sha: str, prefix: str) -> Path:
        return self.root / object_key(sha, prefix)

    def put(self, data: bytes, prefix: str = DEFAULT_PREFIX) -> str:
        """Store ``data`` once under its hash; a concurrent or repeated put of the same bytes is harmless."""
        sha = sha256_hex(data)
        target = self._path(sha, prefix)
        if target.exists():
            return sha
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=f"-{sha[:8]}")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return sha

    def get(self, sha: str, prefix: str = DEFAULT_PREFIX) -> bytes:
        """Read an object; ``ObjectNotFound`` names the key when it is missing."""
        path = self._path(sha, prefix)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {object_key(sha, prefix)!r} in {self.root}") from None

    def exists(self, sha: str, prefix: str = DEFAULT_PREFIX) -> bool:
        """Tell whether the object file is there."""
        return self._path(sha, prefix).is_file()

    def delete(self, sha: str, prefix: str = DEFAULT_PREFIX) -> None:
        """Remove the object file if present."""
        try:
            self._path(sha, prefix).unlink()
        except FileNotFoundError:
            pass

    def iter_objects(self) -> Iterator[tuple[str, str]]:
        """Walk ``<root>/<prefix>/ab/cd/<sha>``; half-written temp files are not objects and are skipped."""
        for path in self.root.glob("*/*/*/*"):
            if path.is_file():
                found = parse_key(path.relative_to(self.root).as_posix())
                if found is not None:
                    yield found
