"""Dataset retention: per-site rules, a sweep that applies them, and storage use per site.

Rules, per site (``RetentionSettings.sites``) over a hub-wide default:

- Confirmed images (status GROUP) are kept, and so is the frame they came from.
- NEW camera frames are kept ``new_frame_days``: older frames and their still-NEW images are deleted (rows and,
  once nothing else needs them, the bytes). ``None`` keeps them.
- DELETED images keep their row, so the same bytes arriving again are still recognised as deleted ("kept as a
  hash"); their bytes go from the store ``deleted_purge_days`` after the delete (the undo window). ``None`` keeps
  the bytes.

Objects are content-addressed and shared across sites and classifiers, so an object (and its thumbnail) is removed
only when no live row anywhere refers to it: no NEW or GROUP image and no frame. The ``blobs`` row always stays.
Rows go first, committed per chunk; objects are removed after the commit, so a crash in between leaves an
unreferenced object (removed by the next sweep), never a row without its object.

Example::

    rules = RetentionSettings(sites={"lot": RetentionRules(new_frame_days=7)})  # others: the default rules
    result = sweep(sessions, store, rules)           # SweepResult(frames=..., images=..., objects=..., bytes=...)
    usage = storage_by_site(session)                 # {"lot": SiteStorage(objects=..., bytes=...), ...}
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, exists, func, select, union
from sqlalchemy.orm import Session, sessionmaker

from camfleet_hub.core.db.types import utcnow
from camfleet_hub.datasets.models import Blob, Classifier, Frame, Image, ImageSource, ImageStatus, Site

if TYPE_CHECKING:  # config.py imports the settings below; the store package imports config.py
    from camfleet_hub.core.store.base import ObjectStore

log = logging.getLogger(__name__)

CHUNK = 500
THUMB_PREFIX = "thumbs"  # as services.media; repeated to keep this module free of the media service's imports
LIVE = (ImageStatus.NEW.value, ImageStatus.GROUP.value)


class RetentionRules(BaseModel):
    """One site's rules; ``None`` keeps forever."""

    model_config = ConfigDict(extra="forbid")

    new_frame_days: float | None = Field(default=30.0, gt=0, description="NEW camera frames kept this long")
    deleted_purge_days: float | None = Field(
        default=7.0, ge=0, description="bytes of DELETED images removed this long after the delete"
    )


class RetentionSettings(BaseModel):
    """The hub-wide default and per-site overrides (by site name); the sweeper runs every ``interval_s``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    interval_s: float = Field(default=3600.0, gt=0)
    default: RetentionRules = Field(default_factory=RetentionRules)
    sites: dict[str, RetentionRules] = Field(default_factory=dict)

    def rules_for(self, site: str) -> RetentionRules:
        return self.sites.get(site, self.default)


@dataclass(frozen=True)
class SweepResult:
    frames: int = 0  # frame rows deleted
    images: int = 0  # NEW image rows deleted with their frames
    objects: int = 0  # objects removed from the store (thumbnails not counted)
    bytes: int = 0  # their size


@dataclass(frozen=True)
class SiteStorage:
    objects: int
    bytes: int


def _still_needed(session: Session, shas: set[str]) -> set[str]:
    """The hashes among ``shas`` that a NEW/GROUP image or a frame (of any site) still refers to."""
    if not shas:
        return set()
    ordered = sorted(shas)
    needed: set[str] = set()
    for i in range(0, len(ordered), CHUNK):
        part = ordered[i : i + CHUNK]
        by_image = select(Image.sha256).where(Image.sha256.in_(part), Image.status.in_(LIVE))
        by_frame = select(Frame.sha256).where(Frame.sha256.in_(part))
        needed.update(session.execute(union(by_image, by_frame)).scalars())
    return needed


def _expire_frames(session: Session, site: Site, days: float, now: datetime) -> tuple[int, int, set[str]]:
    """Delete the site's frames older than ``days`` that no confirmed image came from, and their NEW images."""
    cutoff = now - timedelta(days=days)
    confirmed = exists().where(
        Image.frame_id == Frame.frame_id,
        Image.status == ImageStatus.GROUP.value,
        Image.source == ImageSource.CAMERA.value,
    )
    frames = images = 0
    touched: set[str] = set()
    while True:
        rows = session.execute(
            select(Frame.id, Frame.frame_id, Frame.sha256)
            .where(Frame.site_id == site.id, Frame.received_at < cutoff, ~confirmed)
            .limit(CHUNK)
        ).all()
        if not rows:
            return frames, images, touched
        ids, fids = [r[0] for r in rows], [r[1] for r in rows]
        touched.update(r[2] for r in rows)
        classifiers = select(Classifier.id).where(Classifier.site_id == site.id)
        doomed = session.execute(
            select(Image.id, Image.sha256).where(
                Image.frame_id.in_(fids),
                Image.source == ImageSource.CAMERA.value,
                Image.status == ImageStatus.NEW.value,
                Image.classifier_id.in_(classifiers),
            )
        ).all()
        touched.update(r[1] for r in doomed)
        if doomed:
            session.execute(delete(Image).where(Image.id.in_([r[0] for r in doomed])))
        session.execute(delete(Frame).where(Frame.id.in_(ids)))
        session.commit()
        frames, images = frames + len(ids), images + len(doomed)


def _deleted_candidates(session: Session, site: Site, days: float, now: datetime) -> set[str]:
    """Hashes of the site's images DELETED more than ``days`` ago."""
    cutoff = now - timedelta(days=days)
    changed = Image.updated_at
    return set(
        session.execute(
            select(Image.sha256)
            .join(Classifier, Classifier.id == Image.classifier_id)
            .where(Classifier.site_id == site.id, Image.status == ImageStatus.DELETED.value, changed < cutoff)
        ).scalars()
    )


def _purge_objects(session: Session, store: ObjectStore, candidates: set[str]) -> tuple[int, int]:
    """Remove the objects (and thumbnails) of ``candidates`` that nothing needs any more; the blob rows stay."""
    unneeded = candidates - _still_needed(session, candidates)
    count = size = 0
    for sha in sorted(unneeded):
        blob = session.get(Blob, sha)
        if not store.exists(sha):
            continue  # purged by an earlier sweep
        store.delete(sha)
        if blob is not None and blob.thumb_sha256:
            store.delete(blob.thumb_sha256, THUMB_PREFIX)
        count, size = count + 1, size + (blob.size if blob is not None else 0)
    return count, size


def sweep(
    sessions: sessionmaker[Session], store: ObjectStore, settings: RetentionSettings, now: datetime | None = None
) -> SweepResult:
    """Apply every site's rules once; returns what went."""
    now = now or utcnow()
    frames = images = objects = size = 0
    with sessions() as session:
        for site in session.execute(select(Site).order_by(Site.id)).scalars().all():
            rules = settings.rules_for(site.name)
            candidates: set[str] = set()
            if rules.new_frame_days is not None:
                f, i, touched = _expire_frames(session, site, rules.new_frame_days, now)
                frames, images = frames + f, images + i
                candidates |= touched
            if rules.deleted_purge_days is not None:
                candidates |= _deleted_candidates(session, site, rules.deleted_purge_days, now)
            o, b = _purge_objects(session, store, candidates)
            objects, size = objects + o, size + b
    result = SweepResult(frames, images, objects, size)
    if result != SweepResult():
        log.info("retention: %s", result)
    return result


def storage_by_site(session: Session) -> dict[str, SiteStorage]:
    """Bytes each site keeps in the store: distinct objects its frames or NEW/GROUP images refer to.

    An object shared by two sites counts for both (each would keep it alone); DELETED images count only until
    their bytes are purged, and are left out here (their rows are hashes only).
    """
    by_image = (
        select(Classifier.site_id.label("site_id"), Image.sha256.label("sha256"))
        .join(Classifier, Classifier.id == Image.classifier_id)
        .where(Image.status.in_(LIVE))
    )
    by_frame = select(Frame.site_id.label("site_id"), Frame.sha256.label("sha256"))
    refs = union(by_image, by_frame).subquery()
    rows = session.execute(
        select(Site.name, func.count(Blob.sha256), func.coalesce(func.sum(Blob.size), 0))
        .select_from(Site)
        .outerjoin(refs, refs.c.site_id == Site.id)
        .outerjoin(Blob, Blob.sha256 == refs.c.sha256)
        .group_by(Site.name)
    ).all()
    return {name: SiteStorage(int(count), int(total)) for name, count, total in rows}


class RetentionSweeper:
    """Runs ``sweep`` every ``settings.interval_s`` on a daemon thread; ``stop`` waits for the sweep in progress."""

    def __init__(self, sessions: sessionmaker[Session], store: ObjectStore, settings: RetentionSettings) -> None:
        self.sessions, self.store, self.settings = sessions, store, settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: SweepResult | None = None

    def start(self) -> None:
        if self.settings.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.interval_s):
            try:
                self.last = sweep(self.sessions, self.store, self.settings)
            except Exception:  # noqa: BLE001 - a failed sweep is retried at the next interval
                log.exception("retention sweep failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
