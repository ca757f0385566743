"""Camera frames, image bytes and thumbnails, ingest counters and dead letters, as the API shows them."""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from camfleet_contract.images import ImageError, thumbnail_jpeg
from camfleet_hub.core import urls
from camfleet_hub.core.errors import NotFoundError
from camfleet_hub.core.store.base import ObjectNotFound, ObjectStore
from camfleet_hub.datasets.crud import checked_name, get_site
from camfleet_hub.datasets.models import Blob, Camera, Frame, Site
from camfleet_hub.datasets.schemas import FramePublic
from camfleet_hub.ingest.models import DeadLetter
from camfleet_hub.ingest.schemas import IngestStats
from camfleet_hub.serving.classify import decode_bounded

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubServices

THUMB_PREFIX = "thumbs"
THUMB_SIZE = 256
MAX_FRAMES = 500
MAX_REMEMBERED_THUMBS = 100_000


class ThumbnailCache:
    """Thumbnails made once and kept in the store under ``thumbs/``; the source→thumbnail map lives here.

    The store is content-addressed, so the thumbnail's key is its own hash; a ``Blob.thumb_sha256`` column, when
    the schema has one, makes the map survive restarts.
    """

    def __init__(self, store: ObjectStore, max_pixels: int) -> None:
        self.store = store
        self.max_pixels = max_pixels
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, sha: str) -> bytes:
        blob = session.get(Blob, sha)
        with self._lock:
            thumb = self._known.get(sha) or getattr(blob, "thumb_sha256", None)
        if thumb is not None:
            try:
                return self.store.get(thumb, prefix=THUMB_PREFIX)
            except ObjectNotFound:
                pass
        try:
            original = self.store.get(sha)
        except ObjectNotFound:
            raise NotFoundError(f"image sha256={sha} is not in the object store") from None
        try:
            # reduced-scale decode for large JPEGs: a 40-MP original must not take 120 MB for a 256 px thumbnail
            data = thumbnail_jpeg(decode_bounded(original, self.max_pixels, THUMB_SIZE), size=THUMB_SIZE)
        except ImageError as exc:
            raise NotFoundError(f"image sha256={sha} cannot be thumbnailed: {exc}") from None
        thumb = self.store.put(data, prefix=THUMB_PREFIX)
        with self._lock:
            if len(self._known) >= MAX_REMEMBERED_THUMBS:
                self._known.clear()
            self._known[sha] = thumb
        if blob is not None and hasattr(blob, "thumb_sha256"):
            blob.thumb_sha256 = thumb
            session.commit()
        return data


def original_bytes(store: ObjectStore, sha: str) -> bytes:
    try:
        return store.get(sha)
    except ObjectNotFound:
        raise NotFoundError(f"object sha256={sha} is not in the object store") from None


def list_frames(session: Session, site: str | None, camera: str | None, limit: int) -> list[FramePublic]:
    """Newest frames first, optionally of one site and camera."""
    query = select(Frame, Site.name, Camera.name).join(Site, Frame.site_id == Site.id)
    query = query.join(Camera, Frame.camera_id == Camera.id)
    if site is not None:
        query = query.where(Frame.site_id == get_site(session, site).id)
    if camera is not None:
        query = query.where(Camera.name == checked_name(camera, "camera"))
    query = query.order_by(Frame.captured_at.desc(), Frame.id.desc()).limit(max(1, min(limit, MAX_FRAMES)))
    return [frame_view(frame, site_name, camera_name) for frame, site_name, camera_name in session.execute(query)]


def frame_view(frame: Frame, site: str, camera: str) -> FramePublic:
    return FramePublic(
        frame_id=frame.frame_id,
        site=site,
        camera=camera,
        agent=frame.agent,
        captured_at=frame.captured_at,
        received_at=frame.received_at,
        sha256=frame.sha256,
        width=frame.width,
        height=frame.height,
        reason=frame.reason,
        predictions=frame.predictions,
        image_url=urls.frame_image(frame.frame_id),
        thumbnail_url=urls.frame_thumbnail(frame.frame_id),
    )


def get_frame(session: Session, frame_id: str) -> Frame:
    frame = session.scalar(select(Frame).where(Frame.frame_id == frame_id))
    if frame is None:
        raise NotFoundError(f"frame_id={frame_id!r} not found")
    return frame


def ingest_stats(services: HubServices, session: Session) -> IngestStats:
    """This process's ingest counters plus what the database holds."""
    by_reason = {
        reason: int(n)
        for reason, n in session.execute(select(DeadLetter.reason, func.count()).group_by(DeadLetter.reason))
    }
    return IngestStats(
        worker=asdict(services.ingest_stats.snapshot()),
        frames=int(session.scalar(select(func.count()).select_from(Frame)) or 0),
        dead_letters=sum(by_reason.values()),
        dead_letters_by_reason=by_reason,
    )


def list_dead_letters(session: Session, limit: int = 100, reason: str | None = None) -> list[DeadLetter]:
    query = select(DeadLetter)
    if reason is not None:
        query = query.where(DeadLetter.reason == reason)
    return list(session.scalars(query.order_by(DeadLetter.id.desc()).limit(max(1, min(limit, 1000)))))
