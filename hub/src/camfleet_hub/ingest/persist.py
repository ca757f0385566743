"""Database side of ingest: name look-ups, idempotent inserts (ON CONFLICT DO NOTHING), agent status upserts.

Portable between SQLite and PostgreSQL: both dialects support ``INSERT … ON CONFLICT DO NOTHING … RETURNING``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from camfleet_contract.agent_config import MAX_AGENT_CAMERAS
from camfleet_hub.core.config import DeadLetterSettings
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.datasets import camera_owners, crud
from camfleet_hub.datasets.models import Blob, Camera, Classifier, Frame, Image, ImageSource, ImageStatus, Site
from camfleet_hub.fleet import behaviour
from camfleet_hub.fleet.models import Agent, AgentState
from camfleet_hub.ingest.models import DeadLetter
from camfleet_hub.ingest.validate import StatusUpdate, ValidFrame

PRUNE_CHUNK = 500  # ids per DELETE ... IN (...): well under SQLite's bound-parameter limit

log = logging.getLogger(__name__)


def _table(model: Any) -> Table:
    return model.__table__  # type: ignore[no-any-return]


def insert_ignore(
    session: Session, model: Any, rows: Sequence[dict[str, Any]], conflict: Sequence[str], returning: Any = None
) -> list[Any]:
    """INSERT rows, silently skipping those that hit the unique key ``conflict``; returns RETURNING rows if asked."""
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(_table(model))
    elif dialect == "sqlite":
        stmt = sqlite.insert(_table(model))
    else:
        raise RuntimeError(f"database dialect {dialect!r} is not supported (use sqlite or postgresql)")
    stmt = stmt.on_conflict_do_nothing(index_elements=list(conflict))
    if returning is None:
        session.execute(stmt, list(rows))
        return []
    return list(session.execute(stmt.returning(returning), list(rows)).scalars())


@dataclass
class SiteIndex:
    """Ids of the sites, cameras and classifiers a batch mentions, and the owners of its owned cameras."""

    sites: dict[str, int]
    cameras: dict[tuple[str, str], int]
    classifiers: dict[int, list[int]]
    owners: dict[tuple[str, str], str]


def resolve_names(
    session: Session, pairs: Iterable[tuple[str, str]], register: set[tuple[str, str]] | None = None
) -> SiteIndex:
    """Look up sites and cameras by name; cameras in ``register`` (of known sites) are created when missing."""
    pairs = set(pairs)
    site_names = {s for s, _c in pairs}
    sites: dict[str, int] = {}
    if site_names:
        sites = {n: i for i, n in session.execute(select(Site.id, Site.name).where(Site.name.in_(site_names)))}
    wanted = [(sites[s], c) for s, c in pairs if s in sites]
    if register:
        new = [
            {"site_id": sites[s], "name": c}
            for s, c in register
            if s in sites and c.lower() not in crud.RESERVED_CAMERA_NAMES
        ]
        insert_ignore(session, Camera, new, ["site_id", "name"])
    cameras: dict[tuple[str, str], int] = {}
    owners: dict[tuple[str, str], str] = {}
    classifiers: dict[int, list[int]] = {}
    if wanted:
        by_id = {i: n for n, i in sites.items()}
        rows = session.execute(
            select(Camera.id, Camera.site_id, Camera.name, Camera.agent).where(
                Camera.site_id.in_({s for s, _ in wanted}), Camera.name.in_({c for _, c in wanted})
            )
        )
        for cam_id, site_id, name, agent in rows:
            cameras[(by_id[site_id], name)] = cam_id
            if agent is not None:
                owners[(by_id[site_id], name)] = agent
        for clf_id, site_id in session.execute(
            select(Classifier.id, Classifier.site_id).where(Classifier.site_id.in_(set(sites.values())))
        ):
            classifiers.setdefault(site_id, []).append(clf_id)
    return SiteIndex(sites=sites, cameras=cameras, classifiers=classifiers, owners=owners)


@dataclass
class FrameOutcome:
    """What became of each frame of a batch, by frame_id."""

    inserted: list[str]
    duplicates: list[str]
    conflicts: list[str]  # frame_id already stored with different image bytes


def write_frames(session: Session, frames: Sequence[ValidFrame], index: SiteIndex) -> FrameOutcome:
    """Insert blobs, frames and NEW dataset images (one per classifier of the site), all idempotently."""
    if not frames:
        return FrameOutcome([], [], [])
    now = utcnow()
    _insert_blobs(session, frames, now)
    rows = [
        {
            "frame_id": f.header.frame_id,
            "site_id": index.sites[f.topic.site],
            "camera_id": index.cameras[(f.topic.site, f.topic.camera or "")],
            "agent": f.header.agent,
            "captured_at": f.header.captured_at,
            "received_at": now,
            "sha256": f.header.sha256,
            "width": f.width,
            "height": f.height,
            "reason": f.header.reason,
            "predictions": [p.model_dump(mode="json") for p in f.header.predictions],
        }
        for f in frames
    ]
    inserted = set(insert_ignore(session, Frame, rows, ["frame_id"], returning=Frame.frame_id))
    others = [f for f in frames if f.header.frame_id not in inserted]
    stored_sha: dict[str, str] = {}
    if others:
        wanted = {f.header.frame_id for f in others}
        query = select(Frame.frame_id, Frame.sha256).where(Frame.frame_id.in_(wanted))
        stored_sha = {frame_id: sha for frame_id, sha in session.execute(query)}
    duplicates = [f.header.frame_id for f in others if stored_sha.get(f.header.frame_id) == f.header.sha256]
    conflicts = [f.header.frame_id for f in others if stored_sha.get(f.header.frame_id) != f.header.sha256]
    _insert_images(session, [f for f in frames if f.header.frame_id in inserted], index, now)
    order = [f.header.frame_id for f in frames]
    return FrameOutcome(inserted=[i for i in order if i in inserted], duplicates=duplicates, conflicts=conflicts)


def _insert_blobs(session: Session, frames: Sequence[ValidFrame], now: datetime) -> None:
    """One blob row per distinct image (bytes already in the store); existing ones are kept."""
    blobs = {
        f.header.sha256: {
            "sha256": f.header.sha256,
            "size": len(f.jpeg),
            "width": f.width,
            "height": f.height,
            "format": "JPEG",
            "created_at": now,
        }
        for f in frames
    }
    insert_ignore(session, Blob, list(blobs.values()), ["sha256"])


def _insert_images(session: Session, fresh: Sequence[ValidFrame], index: SiteIndex, now: datetime) -> None:
    """A NEW image per classifier of the site for each newly stored frame; its camera's ``last_seen_at``."""
    images = []
    seen_cameras: set[int] = set()
    for f in fresh:
        site_id = index.sites[f.topic.site]
        seen_cameras.add(index.cameras[(f.topic.site, f.topic.camera or "")])
        for clf_id in index.classifiers.get(site_id, []):
            images.append(
                {
                    "classifier_id": clf_id,
                    "sha256": f.header.sha256,
                    "status": ImageStatus.NEW.value,
                    "source": ImageSource.CAMERA.value,
                    "frame_id": f.header.frame_id,
                    "original_name": f"{f.topic.camera}/{f.header.frame_id}.jpg",
                    "created_at": now,
                    "updated_at": now,
                }
            )
    # The unique (classifier, sha256) key also skips images the site already has, DELETED ones included.
    insert_ignore(session, Image, images, ["classifier_id", "sha256"])
    if seen_cameras:
        # One UPDATE for the batch's cameras (not one per camera: that was a quarter of the ingest thread's time at
        # 50 cameras), in id order so that two ingest processes lock shared rows in the same order.
        stmt = update(_table(Camera)).where(_table(Camera).c.id.in_(sorted(seen_cameras))).values(last_seen_at=now)
        session.execute(stmt)


def add_dead_letter(
    session: Session, topic: str, reason: str, detail: str, size: int, payload_sha256: str | None
) -> None:
    """Record a rejected message; ``payload_sha256`` keys the payload's kept prefix in the store under ``dead/``."""
    session.add(
        DeadLetter(
            received_at=utcnow(),
            topic=topic[:512],
            reason=reason[:64],
            detail=detail[:2000],
            size=size,
            payload_sha256=payload_sha256,
        )
    )


def prune_dead_letters(session: Session, topics: Iterable[str], limits: DeadLetterSettings) -> set[str]:
    """Drop dead letters past the age, per-topic and total caps (oldest first); returns the store keys now unused.

    Any publisher can send garbage: without these caps the table (and the ``dead/`` objects) grow without end.
    """
    doomed: set[int] = set()
    cutoff = utcnow() - timedelta(days=limits.retention_days)
    doomed.update(session.scalars(select(DeadLetter.id).where(DeadLetter.received_at < cutoff)))
    newest_first = select(DeadLetter.id).order_by(DeadLetter.id.desc())
    for topic in {t[:512] for t in topics}:
        query = newest_first.where(DeadLetter.topic == topic).offset(limits.max_rows_per_topic)
        doomed.update(session.scalars(query))
    doomed.update(session.scalars(newest_first.offset(limits.max_rows)))
    if not doomed:
        return set()
    ids = sorted(doomed)
    keys: set[str] = set()
    for start in range(0, len(ids), PRUNE_CHUNK):
        chunk = ids[start : start + PRUNE_CHUNK]
        keys.update(k for k in session.scalars(select(DeadLetter.payload_sha256).where(DeadLetter.id.in_(chunk))) if k)
        session.execute(delete(DeadLetter).where(DeadLetter.id.in_(chunk)))
    keys_list = sorted(keys)
    for start in range(0, len(keys_list), PRUNE_CHUNK):
        chunk_keys = keys_list[start : start + PRUNE_CHUNK]
        keys.difference_update(
            session.scalars(select(DeadLetter.payload_sha256).where(DeadLetter.payload_sha256.in_(chunk_keys)))
        )
    return keys


class LeftOutWarnings:
    """Which cameras were last left out for each (site, agent), so the "over the limit" warning is logged once per
    change instead of on every status (one every few seconds); the ``size`` most recently seen pairs are kept."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._last: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def changed(self, site: str, agent: str, left: Sequence[str]) -> bool:
        """Record what ``agent`` has left out now; True when it is something, and not what was recorded last."""
        key = (site, agent)
        digest = hashlib.blake2b("\n".join(sorted(left)).encode(), digest_size=16).digest() if left else b""
        with self._lock:
            before = self._last.pop(key, b"")
            if digest:
                self._last[key] = digest  # the most recent last: the oldest pair is the one forgotten
                if len(self._last) > self._size:
                    self._last.popitem(last=False)
        return digest not in (b"", before)


_left_out = LeftOutWarnings()


def _register_cameras(session: Session, site_id: int, site: str, agent: str, cameras: Iterable[str]) -> None:
    """Store the cameras a status names and claim the unowned ones for its agent, up to ``MAX_AGENT_CAMERAS``
    owned by that agent; reserved names (MQTT topic words, refused by ``POST …/cameras`` too) are left out."""
    names = sorted({c for c in cameras if c.lower() not in crud.RESERVED_CAMERA_NAMES})
    if not names:
        return
    found = select(Camera.name, Camera.agent).where(Camera.site_id == site_id, Camera.name.in_(names))
    owner: dict[str, str | None] = {name: agent for name, agent in session.execute(found)}
    wanted = [c for c in names if c not in owner or owner[c] is None]  # would become the agent's
    if not wanted:
        _left_out.changed(site, agent, [])  # nothing left out: a later overflow is warned about again
        return  # the usual status: its cameras are stored and owned already
    owned = session.scalar(select(func.count()).where(Camera.site_id == site_id, Camera.agent == agent)) or 0
    room = max(0, MAX_AGENT_CAMERAS - owned)
    taken, left = wanted[:room], wanted[room:]
    if _left_out.changed(site, agent, left):
        log.warning(
            "agent %r of site %r already owns %d cameras (at most %d): %d more left out (%s...)",
            agent, site, owned, MAX_AGENT_CAMERAS, len(left), ", ".join(left[:5]),
        )  # fmt: skip
    new = [{"site_id": site_id, "name": c} for c in taken if c not in owner]
    insert_ignore(session, Camera, new, ["site_id", "name"])
    camera_owners.claim(session, site_id, agent, taken)


def apply_status(session: Session, update_: StatusUpdate) -> bool:
    """Upsert the agent row, register its cameras and claim the unowned ones for it; False when the site is unknown
    (try again later)."""
    site_id = session.execute(select(Site.id).where(Site.name == update_.site)).scalar_one_or_none()
    if site_id is None:
        return False
    insert_ignore(
        session,
        Agent,
        [{"site_id": site_id, "name": update_.agent, "state": AgentState.OFFLINE.value}],
        ["site_id", "name"],
    )
    agent = session.execute(select(Agent).where(Agent.site_id == site_id, Agent.name == update_.agent)).scalar_one()
    status = update_.status
    if update_.offline:
        # Last will (or a clean shutdown): keep the last full status, only the state changes.
        agent.state = AgentState.OFFLINE.value
        return True
    assert status is not None
    if agent.last_seen_at is not None and status.ts < agent.last_seen_at:
        return True  # an older retained status replayed after a newer one: keep the newer
    agent.state = AgentState.ONLINE.value
    agent.status = status.model_dump(mode="json")
    # Never later than the hub's own clock: a status dated in the future (a skewed clock, or a hostile one dated
    # year 9999) would otherwise make every later genuine status look "older" and freeze the agent's row.
    agent.last_seen_at = min(status.ts, utcnow())
    if status.software_version:
        agent.software_version = status.software_version[:64]  # the column's width; the full text is in status
    if status.cameras:
        _register_cameras(session, site_id, update_.site, update_.agent, status.cameras)
    if status.first_frames:
        behaviour.record(session, site_id, status)
    return True
