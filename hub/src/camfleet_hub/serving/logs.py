"""A site's REST prediction log: filtered keyset pages, CSV export, and retention by age.

Retention follows the site's ``event_retention_days`` (fleet site settings): one age for a site's logs, camera
events and REST predictions alike. ``sweep`` runs in the fleet runtime's hourly retention sweeper, beside the
camera events, so reading a log never deletes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from camfleet_hub.core.spreadsheet import CsvWriter
from camfleet_hub.fleet.events import retention_days
from camfleet_hub.serving.models import PredictionLog

PAGE = 100
CSV_BATCH = 1000
CSV_COLUMNS = (
    "id",
    "created_at",
    "classifier",
    "model_id",
    "model_version",
    "caller",
    "route",
    "image_name",
    "label",
    "probability",
    "anomaly",
    "anomaly_score",
    "probabilities",
)


@dataclass(frozen=True)
class LogFilter:
    """Which rows of one site: every field optional but the site."""

    site_id: int
    classifier: str | None = None
    caller: str | None = None
    label: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class LogPage:
    rows: list[PredictionLog]
    next_before: int | None  # keyset: pass as ``before`` for the next (older) page


def _filtered(f: LogFilter) -> Select[PredictionLog]:
    query = select(PredictionLog).where(PredictionLog.site_id == f.site_id)
    if f.classifier:
        query = query.where(PredictionLog.classifier == f.classifier)
    if f.caller:
        query = query.where(PredictionLog.caller == f.caller)
    if f.label:
        query = query.where(PredictionLog.label == f.label)
    if f.since is not None:
        query = query.where(PredictionLog.created_at >= f.since)
    if f.until is not None:
        query = query.where(PredictionLog.created_at < f.until)
    return query


def query(session: Session, f: LogFilter, before: int | None = None, limit: int = PAGE) -> LogPage:
    """Newest first, ``limit`` rows older than id ``before``."""
    q = _filtered(f)
    if before is not None:
        q = q.where(PredictionLog.id < before)
    rows = list(session.scalars(q.order_by(PredictionLog.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return LogPage(rows, rows[-1].id if more and rows else None)


def choices(session: Session, site_id: int) -> dict[str, list[str]]:
    """The classifiers, callers and labels seen in a site's log (for the filter lists)."""
    out: dict[str, list[str]] = {}
    for name, column in (
        ("classifiers", PredictionLog.classifier),
        ("callers", PredictionLog.caller),
        ("labels", PredictionLog.label),
    ):
        rows = session.scalars(select(column).where(PredictionLog.site_id == site_id).distinct().order_by(column))
        out[name] = list(rows)
    return out


def csv_row(r: PredictionLog, *, probabilities: bool = True) -> list[object]:
    """One row in CSV_COLUMNS order; without the last column (every probability as JSON) for a page."""
    cells: list[object] = [
        r.id,
        r.created_at.isoformat(),
        r.classifier,
        r.model_id if r.model_id is not None else "",
        r.model_version,
        r.caller,
        r.route,
        r.image_name,
        r.label,
        f"{r.probability:.6f}",
        "true" if r.anomaly else "false",
        f"{r.anomaly_score:.6f}",
    ]
    if probabilities:
        cells.append(json.dumps(r.probabilities, separators=(",", ":")))
    return cells


def iter_csv(session: Session, f: LogFilter) -> Iterator[str]:
    """The header, then every matching row newest first, fetched in keyset batches (bounded memory)."""
    buffer = io.StringIO()
    writer = CsvWriter(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    before: int | None = None
    while True:
        page = query(session, f, before, CSV_BATCH)
        for r in page.rows:
            writer.writerow(csv_row(r))
        yield flush()
        if page.next_before is None:
            return
        before = page.next_before


def kept_days(session: Session, site_id: int) -> int:
    """How many days the site's log keeps (its fleet ``event_retention_days``)."""
    return retention_days(session, site_id)


def sweep(session: Session, site_id: int, cutoff: datetime) -> int:
    """Delete the site's rows older than ``cutoff``; returns how many went (committed).

    Run by the fleet runtime's retention sweeper with the camera events, never by a request."""
    result = session.execute(
        delete(PredictionLog).where(PredictionLog.site_id == site_id, PredictionLog.created_at < cutoff)
    )
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)
