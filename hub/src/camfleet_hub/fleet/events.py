"""Event history: validate agents' event messages, store them idempotently, query by time range, age them out.

The ingest worker calls ``validate_event`` on its decode threads and ``store_events`` inside the batch's
transaction, so an event is acknowledged only once it is committed and a redelivery (same ``event_id``) is a no-op.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from camfleet_contract.messages import Event, MessageError, from_json
from camfleet_contract.topics import Topics
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import InvalidError
from camfleet_hub.datasets import camera_owners
from camfleet_hub.datasets.models import Site
from camfleet_hub.fleet.models import DEFAULT_RETENTION_DAYS, FleetEvent, FleetSiteSettings
from camfleet_hub.ingest.persist import insert_ignore
from camfleet_hub.ingest.validate import Rejection, parse_topic

MAX_PAGE = 1000
SWEEP_CHUNK = 500  # ids per DELETE ... IN (...): short transactions, well under SQLite's parameter limit


@dataclass(frozen=True)
class ValidEvent:
    """An event message whose topic and body agree."""

    site: str
    event: Event


def validate_event(topics: Topics, topic: str, payload: bytes) -> ValidEvent:
    """Parse the topic and the JSON body; the body must name the topic's site and camera."""
    parsed = parse_topic(topics, topic)
    if parsed.kind != "event":
        raise Rejection("bad_topic", f"topic {topic!r} is not an event topic")
    try:
        event = from_json(Event, payload)
    except MessageError as exc:
        raise Rejection("bad_event", str(exc)) from None
    if (event.site, event.camera) != (parsed.site, parsed.camera):
        raise Rejection(
            "topic_mismatch",
            f"event names site={event.site!r} camera={event.camera!r} but came on {parsed.site}/{parsed.camera}",
        )
    return ValidEvent(parsed.site, event)


def store_events(session: Session, events: Sequence[ValidEvent], site_ids: dict[str, int]) -> int:
    """Insert the events of known sites (the caller rejects the others); returns how many were new.

    An event dated after the hub's clock is stored at the hub's time: dated year 9999 (a skewed or hostile agent
    clock) it would stay first in every list and never age out."""
    now = utcnow()
    rows = []
    for v in events:
        e = v.event
        rows.append(
            {
                "event_id": e.event_id[:64],
                "site_id": site_ids[v.site],
                "camera": e.camera,
                "agent": e.agent,
                "classifier": e.classifier,
                "model_version": e.model_version[:64],
                "frame_id": e.frame_id[:64],
                "ts": min(e.ts.astimezone(UTC), now),
                "label": e.label[:200],
                "probability": e.probability,
                "anomaly": e.anomaly,
                "anomaly_score": e.anomaly_score,
                "motion": e.motion,
                "latency_ms": e.latency_ms,
                "predictions": [p.model_dump() for p in e.predictions],
            }
        )
    return len(insert_ignore(session, FleetEvent, rows, ["event_id"], returning=FleetEvent.id))


def foreign_agent_events(session: Session, events: Sequence[ValidEvent]) -> list[str | None]:
    """Per event, why it is refused when its camera is owned by an agent other than the one it names, else None."""
    pairs = {(v.site, v.event.camera) for v in events}
    if not pairs:
        return []
    owner = camera_owners.owners(session, pairs)
    return [camera_owners.mismatch(v.event.camera, owner.get((v.site, v.event.camera)), v.event.agent) for v in events]


def site_ids(session: Session, names: set[str]) -> dict[str, int]:
    """Ids of those sites that exist."""
    if not names:
        return {}
    return {n: i for n, i in session.execute(select(Site.name, Site.id).where(Site.name.in_(sorted(names))))}


# ---------------------------------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class EventFilter:
    """What ``GET /events`` asks for; every field optional except the site ids the caller may read."""

    site_ids: list[int] | None  # None: every site (hub admins)
    camera: str | None = None
    classifier: str | None = None
    label: str | None = None
    anomaly: bool | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Cursor:
    """Where the previous page stopped: newest first, ties broken by id."""

    ts: datetime
    id: int

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.ts.isoformat()}|{self.id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            ts, _, ident = raw.partition("|")
            cursor = cls(datetime.fromisoformat(ts), int(ident))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidError(f"cursor={text[:80]!r} is not a cursor this API returned") from None
        if cursor.ts.tzinfo is None:
            raise InvalidError(f"cursor={text[:80]!r} is not a cursor this API returned")
        return cursor


@dataclass(frozen=True)
class EventPage:
    rows: list[tuple[FleetEvent, str]]  # (event, site name)
    next_cursor: str | None


def _filtered(f: EventFilter) -> Select[FleetEvent, str]:
    q = select(FleetEvent, Site.name).join(Site, Site.id == FleetEvent.site_id)
    if f.site_ids is not None:
        q = q.where(FleetEvent.site_id.in_(f.site_ids))
    if f.camera is not None:
        q = q.where(FleetEvent.camera == f.camera)
    if f.classifier is not None:
        q = q.where(FleetEvent.classifier == f.classifier)
    if f.label is not None:
        q = q.where(FleetEvent.label == f.label)
    if f.anomaly is not None:
        q = q.where(FleetEvent.anomaly == f.anomaly)
    if f.since is not None:
        q = q.where(FleetEvent.ts >= f.since)
    if f.until is not None:
        q = q.where(FleetEvent.ts < f.until)
    return q


def query_events(session: Session, f: EventFilter, limit: int, cursor: str | None) -> EventPage:
    """One page, newest first; ``next_cursor`` is None on the last page."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidError(f"limit={limit}: use 1..{MAX_PAGE}")
    q = _filtered(f)
    if cursor:
        c = Cursor.decode(cursor)
        q = q.where(or_(FleetEvent.ts < c.ts, and_(FleetEvent.ts == c.ts, FleetEvent.id < c.id)))
    ordered = q.order_by(FleetEvent.ts.desc(), FleetEvent.id.desc()).limit(limit + 1)
    rows: list[tuple[FleetEvent, str]] = [(r[0], r[1]) for r in session.execute(ordered)]
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = Cursor(rows[-1][0].ts, rows[-1][0].id).encode() if more and rows else None
    return EventPage(rows, nxt)


def iter_events(session: Session, f: EventFilter, batch: int = MAX_PAGE) -> Iterator[tuple[FleetEvent, str]]:
    """Every matching event, newest first, page by page (the CSV export streams this)."""
    cursor: str | None = None
    while True:
        page = query_events(session, f, batch, cursor)
        yield from page.rows
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


@dataclass(frozen=True)
class HourCount:
    hour: datetime
    classifier: str
    label: str
    count: int
    anomalies: int


def hourly_counts(
    session: Session, site_id: int, camera: str, since: datetime, until: datetime, classifier: str | None = None
) -> list[HourCount]:
    """Events per hour, classifier and label of one camera (the timeline); counted in Python over one indexed
    range scan, since hour truncation is spelled differently by every database."""
    q = select(FleetEvent.ts, FleetEvent.classifier, FleetEvent.label, FleetEvent.anomaly).where(
        FleetEvent.site_id == site_id, FleetEvent.camera == camera, FleetEvent.ts >= since, FleetEvent.ts < until
    )
    if classifier is not None:
        q = q.where(FleetEvent.classifier == classifier)
    counts: dict[tuple[datetime, str, str], list[int]] = {}
    for ts, clf, label, anomaly in session.execute(q):
        hour = ts.replace(minute=0, second=0, microsecond=0)
        c = counts.setdefault((hour, clf, label), [0, 0])
        c[0] += 1
        c[1] += int(anomaly)
    return [HourCount(h, clf, label, n, a) for (h, clf, label), (n, a) in sorted(counts.items())]


# ---------------------------------------------------------------------------------------------------- retention


def retention_days(session: Session, site_id: int) -> int:
    row = session.get(FleetSiteSettings, site_id)
    return row.event_retention_days if row is not None else DEFAULT_RETENTION_DAYS


def retention_cutoffs(session: Session, now: datetime | None = None) -> dict[int, datetime]:
    """Per site id, the moment before which its events and prediction logs are past retention."""
    now = now or utcnow()
    return {
        site_id: now - timedelta(days=retention_days(session, site_id)) for site_id in session.scalars(select(Site.id))
    }


def sweep(session: Session, site_id: int, cutoff: datetime) -> int:
    """Delete the site's events older than ``cutoff``; returns how many went. Commits per chunk."""
    removed = 0
    while True:
        ids = list(
            session.scalars(
                select(FleetEvent.id).where(FleetEvent.site_id == site_id, FleetEvent.ts < cutoff).limit(SWEEP_CHUNK)
            )
        )
        if not ids:
            return removed
        session.execute(delete(FleetEvent).where(FleetEvent.id.in_(ids)))
        session.commit()
        removed += len(ids)


def count_events(session: Session, site_id: int) -> int:
    return int(session.execute(select(func.count()).where(FleetEvent.site_id == site_id)).scalar_one())
