"""Import a folder-per-class dataset (a zip upload or a folder on the hub's host) into a classifier.

Every entry is checked on its own and either imported, counted as a duplicate / previously deleted image, or
rejected with a reason; hostile archives (path traversal, symlinks, zip bombs) never touch the file system,
because entries are read into memory one at a time and never extracted.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from camfleet_contract.images import ImageError, decode_image, probe_image
from camfleet_contract.topics import TopicError, validate_name
from camfleet_hub.db.models import Blob, Classifier, Group, Image, ImageSource, ImageStatus
from camfleet_hub.services.errors import InvalidError, TooLargeError
from camfleet_hub.store.base import ObjectStore, sha256_hex


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
class ImportReport:
    """What happened to each entry; becomes the ``ImportResult`` schema."""

    imported: int = 0
    duplicates: int = 0
    previously_deleted: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    groups: dict[str, int] = field(default_factory=dict)

    def reject(self, name: str, reason: str) -> None:
        self.rejected.append({"file": name, "reason": reason})

    def as_dict(self) -> dict[str, object]:
        return {
            "imported": self.imported,
            "duplicates": self.duplicates,
            "previously_deleted": self.previously_deleted,
            "rejected": self.rejected,
            "groups": self.groups,
        }


@dataclass
class Entry:
    """One file of the dataset: its display name, the class folder it sits in, and its bytes or why not."""

    name: str
    group: str | None = None
    data: bytes | None = None
    reason: str | None = None


def _class_of(parts: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(group, None) for ``.../<group>/<file>``, or (None, reason) when the path cannot name a class."""
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None, "hidden or metadata file"
    if len(parts) < 2:
        return None, "not inside a class folder (expected <class>/<image>)"
    try:
        return validate_name(parts[-2], "group"), None
    except TopicError as exc:
        return None, f"class folder name is not usable: {exc}"


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
                entry.group, entry.reason = _class_of(parts)
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


def iter_folder(root: Path, limits: ImportLimits) -> Iterator[Entry]:
    """Entries of a folder-per-class directory; symbolic links are reported, never followed."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(filenames) + [d for d in dirnames if (here / d).is_symlink()]:
            files.append(here / name)
            if len(files) > limits.max_files:
                raise TooLargeError(f"path: folder holds more than {limits.max_files} files")
    total = 0
    for path in files:
        rel = path.relative_to(root)
        entry = Entry(name=rel.as_posix())
        if path.is_symlink():
            entry.reason = "symbolic link (not followed)"
            yield entry
            continue
        entry.group, entry.reason = _class_of(rel.parts)
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


class Importer:
    """Adds checked entries to one classifier's dataset as GROUP images, one short transaction per image."""

    def __init__(self, session: Session, store: ObjectStore, classifier: Classifier, limits: ImportLimits) -> None:
        self.session = session
        self.store = store
        self.classifier = classifier
        self.limits = limits
        self.report = ImportReport()
        self._groups: dict[str, int] = {}
        self._seen: set[str] = set()

    def run(self, entries: Iterator[Entry]) -> ImportReport:
        for entry in entries:
            if entry.reason is not None or entry.data is None or entry.group is None:
                self.report.reject(entry.name, entry.reason or "no data")
                continue
            self._add(entry.name, entry.group, entry.data)
        return self.report

    def _group_id(self, name: str) -> int:
        if name not in self._groups:
            group = self.session.scalar(
                select(Group).where(Group.classifier_id == self.classifier.id, Group.name == name)
            )
            if group is None:
                group = Group(classifier_id=self.classifier.id, name=name)
                self.session.add(group)
                try:
                    self.session.commit()
                except IntegrityError:  # created concurrently: use theirs
                    self.session.rollback()
                    group = self.session.scalar(
                        select(Group).where(Group.classifier_id == self.classifier.id, Group.name == name)
                    )
                    assert group is not None
            self._groups[name] = group.id
        return self._groups[name]

    def _existing_status(self, sha: str) -> str | None:
        return self.session.scalar(
            select(Image.status).where(Image.classifier_id == self.classifier.id, Image.sha256 == sha)
        )

    def _add(self, name: str, group: str, data: bytes) -> None:
        sha = sha256_hex(data)
        if sha in self._seen:
            self.report.duplicates += 1
            return
        status = self._existing_status(sha)
        if status == ImageStatus.DELETED.value:
            self.report.previously_deleted += 1
            return
        if status is not None:
            self.report.duplicates += 1
            return
        try:
            fmt, _, _ = probe_image(data)
            rgb = decode_image(data, max_pixels=self.limits.max_pixels)
        except ImageError as exc:
            self.report.reject(name, str(exc))
            return
        group_id = self._group_id(group)
        self.store.put(data)
        if self.session.get(Blob, sha) is None:
            self.session.add(Blob(sha256=sha, size=len(data), width=rgb.shape[1], height=rgb.shape[0], format=fmt))
            try:
                self.session.commit()
            except IntegrityError:  # stored concurrently (ingest or another import): same bytes, same row
                self.session.rollback()
        self.session.add(
            Image(
                classifier_id=self.classifier.id,
                sha256=sha,
                status=ImageStatus.GROUP.value,
                group_id=group_id,
                source=ImageSource.IMPORT.value,
                original_name=name[:512],
            )
        )
        try:
            self.session.commit()
        except IntegrityError:
            self.session.rollback()
            self.report.duplicates += 1
            return
        self._seen.add(sha)
        self.report.imported += 1
        self.report.groups[group] = self.report.groups.get(group, 0) + 1


def import_zip(
    session: Session, store: ObjectStore, classifier: Classifier, fileobj: BinaryIO, limits: ImportLimits
) -> ImportReport:
    """Import an uploaded folder-per-class zip."""
    return Importer(session, store, classifier, limits).run(iter_zip(fileobj, limits))


def import_folder(
    session: Session,
    store: ObjectStore,
    classifier: Classifier,
    path: str,
    limits: ImportLimits,
    allowed_roots: list[Path] | None = None,
) -> ImportReport:
    """Import a folder-per-class directory on the hub's host."""
    root = resolve_import_root(path, allowed_roots)
    return Importer(session, store, classifier, limits).run(iter_folder(root, limits))
