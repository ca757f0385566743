"""A job's progress history: every heartbeat kept as an event, and the per-epoch curve drawn on the Training page.

Heartbeats come every few seconds; one that repeats the previous one exactly (same progress, stage and message,
no epoch figures) adds nothing and is not stored, and a job keeps at most MAX_EVENTS_PER_JOB events.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from camfleet_contract.rest import EpochMetrics
from camfleet_hub.training.models import JobEvent

MAX_EVENTS_PER_JOB = 20_000
MAX_EVENTS_SERVED = 5_000


def _latest(session: Session, job_id: int) -> JobEvent | None:
    return session.scalar(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc()).limit(1))


def record(
    session: Session,
    job_id: int,
    progress: float,
    stage: str | None,
    message: str | None,
    epochs: list[dict[str, Any]] | None = None,
) -> JobEvent | None:
    """Add the heartbeat as an event (not committed); None when it repeats the last one or the job is full."""
    last = _latest(session, job_id)
    if not epochs and last is not None and (last.progress, last.stage, last.message) == (progress, stage, message):
        return None
    count = session.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id)) or 0
    if count >= MAX_EVENTS_PER_JOB and not epochs:
        return None
    event = JobEvent(job_id=job_id, progress=progress, stage=stage, message=message, metrics=epochs or None)
    session.add(event)
    return event


def events(session: Session, job_id: int, after: int = 0, limit: int = MAX_EVENTS_SERVED) -> list[JobEvent]:
    """The job's events in order, those after event id ``after`` only."""
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after).order_by(JobEvent.id)
    return list(session.scalars(query.limit(max(1, min(limit, MAX_EVENTS_SERVED)))))


def epoch_curve(session: Session, job_id: int) -> list[EpochMetrics]:
    """One point per epoch, sorted; a later report of the same epoch (a retried attempt) replaces the earlier.

    The points were stored from validated heartbeats (``JobHeartbeat.epochs``); one that no longer validates is
    left out rather than failing the page.
    """
    points: dict[int, EpochMetrics] = {}
    rows = session.scalars(select(JobEvent.metrics).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
    for metrics in rows:
        for point in metrics or []:
            if isinstance(point, dict) and isinstance(point.get("epoch"), int):
                try:
                    points[point["epoch"]] = EpochMetrics.model_validate(point)
                except ValidationError:
                    continue
    return [points[e] for e in sorted(points)]


def eta_seconds(session: Session, job_id: int) -> float | None:
    """Seconds left according to the newest epoch figures that carried an estimate."""
    for point in reversed(epoch_curve(session, job_id)):
        if point.eta_s is not None:
            return point.eta_s
    return None
