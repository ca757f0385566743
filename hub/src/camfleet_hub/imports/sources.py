"""Sources of an import: a folder-per-class zip, a folder on the hub's host, browser-uploaded files.

Each source yields ``Entry``s one at a time (bytes in memory, never extracted), so hostile archives (path
traversal, symlinks, zip bombs) never touch the file system. URL lists live in ``fetch``; the job that turns
entries into images lives in ``importer`` and ``import_jobs``.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from camfleet_contract.topics import TopicError, validate_name
from camfleet_hub.core.errors import InvalidError, TooLargeError


@dataclass(frozen=True)
class ImportLimits:
    """Bounds that keep one import from exhausting memory, disk or time."""

    max_files: int = 20_000
    max_total_bytes: int = 2 * 1024**3
    max_file_bytes: int = 50 * 1024**2
    max_ratio: float = 200.0
    max_pixels: int = 40_000_000
    max_upload_bytes: int = 2 * 1024**3


@dataclass
class Entry:
    """One file of a source: its display name, the class folder it sits in, and its bytes or why not.

    ``reason`` rejects the file outright; ``group_reason`` only matters when the import has no target group
    and the file would go to its class folder's group.
    """

    name: str
    group: str | None = None
    data: bytes | None = None
    reason: str | None = None
    group_reason: str | None = None
    origin: str | None = None


def _class_of(parts: tuple[str, ...], entry: Entry) -> None:
    """Set the entry's group from ``.../<group>/<file>``; a file at the top goes to the inbox (no group)."""
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        entry.reason = "hidden or metadata file"
        return
    if len(parts) < 2:
        return
    try:
        entry.group = validate_name(parts[-2], "group")
    except TopicError as exc:
        entry.group_reason = f"class folder name is not usable: {exc}"


def count_zip_entries(fileobj: BinaryIO) -> int:
    """How many files (not folders) a zip holds; raises InvalidError for an unreadable archive."""
    fileobj.seek(0)
    try:
        with zipfile.ZipFile(fileobj) as archive:
            return sum(1 for i in archive.infolist() if not i.is_dir())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise InvalidError(f"file: not a readable zip archive ({exc})") from None
    finally:
        fileobj.seek(0)


def count_folder_entries(root: Path, limits: ImportLimits) -> int:
    return sum(1 for _ in _folder_files(root, limits))


def _zip_parts(raw_name: str) -> tuple[tuple[str, ...] | None, str | None]:
    """Split a zip entry name safely; (None, reason) for absolute paths and ``..`` traversal."""
    name = raw_name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None, "absolute path in archive"
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        return None, "path traversal ('..') in archive"
    if not parts:
        return None, "empty entry name"
    return parts, None


def iter_zip(fileobj: BinaryIO, limits: ImportLimits) -> Iterator[Entry]:
    """Entries of a folder-per-class zip, read one at a time into memory; raises for a bad or huge archive."""
    fileobj.seek(0, os.SEEK_END)
    size = fileobj.tell()
    fileobj.seek(0)
    if size > limits.max_upload_bytes:
        raise TooLargeError(f"file: upload of {size} bytes exceeds the limit of {limits.max_upload_bytes} bytes")
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise InvalidError(f"file: not a readable zip archive ({exc})") from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > limits.max_files:
            raise TooLargeError(f"file: archive holds {len(infos)} files, over the limit of {limits.max_files}")
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_total_bytes:
            raise TooLargeError(
                f"file: archive unpacks to {declared} bytes, over the limit of {limits.max_total_bytes}"
            )
        total = 0
        for info in infos:
            parts, reason = _zip_parts(info.filename)
            entry = Entry(name=info.filename)
            if parts is None:
                entry.reason = reason
                yield entry
                continue
            entry.name = "/".join(parts)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                entry.reason = "symbolic link in archive"
            elif info.flag_bits & 0x1:
                entry.reason = "encrypted entry"
            elif info.file_size > limits.max_file_bytes:
                entry.reason = f"file of {info.file_size} bytes exceeds the limit of {limits.max_file_bytes}"
            elif info.file_size > limits.max_ratio * max(info.compress_size, 1):
                ratio = info.file_size / max(info.compress_size, 1)
                entry.reason = f"compression ratio {ratio:.0f} exceeds {limits.max_ratio:.0f} (zip bomb?)"
            else:
                _class_of(parts, entry)
            if entry.reason is None:
                try:
                    with archive.open(info) as src:
                        data = src.read(limits.max_file_bytes + 1)
                except (zipfile.BadZipFile, zlib.error, NotImplementedError, OSError, EOFError, RuntimeError) as exc:
                    entry.reason = f"unreadable archive entry ({exc})"
                else:
                    total += len(data)
                    if len(data) > limits.max_file_bytes or total > limits.max_total_bytes:
                        entry.reason = "entry larger than declared in the archive (zip bomb?)"
                    else:
                        entry.data = data
            yield entry


def resolve_import_root(path: str, allowed_roots: list[Path] | None) -> Path:
    """The server folder to import, resolved; it must exist and, when roots are configured, lie inside one."""
    try:
        root = Path(path).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise InvalidError(f"path={path!r} does not exist on the hub") from None
    if not root.is_dir():
        raise InvalidError(f"path={path!r} is not a directory")
    if allowed_roots:
        allowed = [r.expanduser().resolve() for r in allowed_roots]
        if not any(root == r or root.is_relative_to(r) for r in allowed):
            raise InvalidError(f"path={path!r} is outside the allowed import roots {[str(r) for r in allowed]}")
    return root


def _folder_files(root: Path, limits: ImportLimits) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(filenames) + [d for d in dirnames if (here / d).is_symlink()]:
            files.append(here / name)
            if len(files) > limits.max_files:
                raise TooLargeError(f"path: folder holds more than {limits.max_files} files")
    return files


def iter_folder(root: Path, limits: ImportLimits) -> Iterator[Entry]:
    """Entries of a folder-per-class directory; symbolic links are reported, never followed."""
    total = 0
    for path in _folder_files(root, limits):
        rel = path.relative_to(root)
        entry = Entry(name=rel.as_posix(), origin=str(path))
        if path.is_symlink():
            entry.reason = "symbolic link (not followed)"
            yield entry
            continue
        _class_of(rel.parts, entry)
        if entry.reason is None:
            try:
                size = path.stat().st_size
                if size > limits.max_file_bytes:
                    entry.reason = f"file of {size} bytes exceeds the limit of {limits.max_file_bytes}"
                elif total + size > limits.max_total_bytes:
                    entry.reason = f"import exceeds the limit of {limits.max_total_bytes} bytes"
                else:
                    with open(path, "rb", opener=_no_follow_open) as fh:
                        entry.data = fh.read(limits.max_file_bytes + 1)
                    total += len(entry.data)
            except OSError as exc:
                entry.reason = f"unreadable file ({exc.strerror or exc})"
        yield entry


def _no_follow_open(path: str, flags: int) -> int:
    """Open without following a symlink swapped in after the walk."""
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))


def iter_uploads(folder: Path, names: list[str], limits: ImportLimits, start: int = 0) -> Iterator[Entry]:
    """Browser-uploaded files staged as ``folder/<index>`` from ``start`` on; ``names`` as the browser sent them."""
    for i, name in enumerate(names):
        if i < start:
            continue
        entry = Entry(name=name)
        path = folder / str(i)
        try:
            size = path.stat().st_size
            if size > limits.max_file_bytes:
                entry.reason = f"file of {size} bytes exceeds the limit of {limits.max_file_bytes}"
            else:
                entry.data = path.read_bytes()
        except OSError as exc:
            entry.reason = f"unreadable upload ({exc.strerror or exc})"
        yield entry
