"""The training-job queue: create, claim under a renewable lease, heartbeat, fail, cancel, and the job's dataset.

Claiming is atomic on both databases: PostgreSQL locks the chosen row with ``FOR UPDATE SKIP LOCKED``; SQLite
takes the job with one conditional ``UPDATE … WHERE status still claimable`` and retries when another worker
won the race. So two trainers never hold the same job.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import String, and_, cast, func, literal, or_, select, true, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from camfleet_contract.rest import COMPARE_MODE, Dataset, DatasetImage, ModelComparison
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import ConflictError, InvalidError, NotFoundError
from camfleet_hub.datasets import duplicates
from camfleet_hub.datasets import listing as datasets
from camfleet_hub.datasets.embeddings import load_vectors
from camfleet_hub.datasets.models import Classifier
from camfleet_hub.training import progress_log
from camfleet_hub.training.announce import default_model
from camfleet_hub.training.models import JobStatus, TrainingJob

LEASE_SECONDS = 60.0
MIN_GROUPS = 2
MIN_IMAGES_PER_GROUP = 2
CLAIM_RETRIES = 8
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def get_job(session: Session, job_id: int) -> TrainingJob:
    job = session.get(TrainingJob, job_id)
    if job is None:
        raise NotFoundError(f"job id={job_id} not found")
    return job


def list_jobs(session: Session, classifier: Classifier, limit: int = 100) -> list[TrainingJob]:
    return list(
        session.scalars(
            select(TrainingJob)
            .where(TrainingJob.classifier_id == classifier.id)
            .order_by(TrainingJob.id.desc())
            .limit(max(1, min(limit, 1000)))
        )
    )


def trainable_groups(session: Session, classifier: Classifier) -> dict[str, int]:
    """Confirmed (GROUP) image counts per group name, common groups of same-named classifiers included."""
    return datasets.training_counts(session, classifier)


def not_ready(session: Session, classifier: Classifier) -> str | None:
    """Why the classifier cannot be trained now, in words (None: it can): at least MIN_GROUPS groups with
    MIN_IMAGES_PER_GROUP confirmed images each, one of them at least not a none-of-the-above group."""
    counts = trainable_groups(session, classifier)
    ready = sorted(name for name, n in counts.items() if n >= MIN_IMAGES_PER_GROUP)
    if len(ready) < MIN_GROUPS:
        have = ", ".join(f"{name} ({n})" for name, n in sorted(counts.items())) or "none"
        return (
            f"classifier {classifier.name!r} needs at least {MIN_GROUPS} groups with at least "
            f"{MIN_IMAGES_PER_GROUP} confirmed (GROUP) images each; groups with confirmed images: {have}"
        )
    return _only_none(classifier, ready, datasets.none_of_the_above_names(session, classifier))


def _only_none(classifier: Classifier, classes: list[str], none: set[str]) -> str | None:
    if classes and set(classes) <= none:
        return (
            f"classifier {classifier.name!r}: every group with enough images ({', '.join(classes)}) is marked none "
            "of the above; at least one must be a group the model should recognise (unmark one, or confirm images "
            "into another group)"
        )
    return None


def create_job(
    session: Session,
    classifier: Classifier,
    mode: str = "quick",
    auto_promote: bool = False,
    params: dict[str, Any] | None = None,
) -> TrainingJob:
    """Queue a job; 409 while one is queued or running, 422 when ``not_ready`` says why it cannot train."""
    # Serialise creators per classifier on PostgreSQL (SQLite ignores FOR UPDATE; its writers are serial).
    session.execute(select(Classifier.id).where(Classifier.id == classifier.id).with_for_update())
    active = session.scalar(
        select(TrainingJob.id).where(TrainingJob.classifier_id == classifier.id, TrainingJob.status.in_(ACTIVE))
    )
    if active is not None:
        session.rollback()
        raise ConflictError(f"classifier {classifier.name!r} already has job id={active} queued or running")
    problem = not_ready(session, classifier)
    if problem is not None:
        session.rollback()
        raise InvalidError(problem)
    params = {k: v for k, v in (params or {}).items() if v is not None}
    gpu = bool(params.get("gpu", False))
    job = TrainingJob(classifier_id=classifier.id, mode=mode, auto_promote=auto_promote, params=params, gpu=gpu)
    session.add(job)
    session.commit()
    return job


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Queued jobs, and running ones whose lease ran out and that may still be retried."""
    return or_(
        TrainingJob.status == JobStatus.QUEUED.value,
        and_(
            TrainingJob.status == JobStatus.RUNNING.value,
            TrainingJob.lease_expires_at < now,
            TrainingJob.attempts < TrainingJob.max_attempts,
        ),
    )


def fail_exhausted(session: Session, now: datetime | None = None) -> int:
    """Fail running jobs whose lease expired on their last allowed attempt; returns how many."""
    now = now or utcnow()
    reason = literal("lease expired ") + cast(TrainingJob.attempts, String) + literal(" times")
    result = session.execute(
        update(TrainingJob)
        .where(
            TrainingJob.status == JobStatus.RUNNING.value,
            TrainingJob.lease_expires_at < now,
            TrainingJob.attempts >= TrainingJob.max_attempts,
        )
        .values(status=JobStatus.FAILED.value, message=reason, finished_at=now, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _gpu_ok(gpu: bool) -> ColumnElement[bool]:
    """Jobs a worker may take: all of them with a GPU, only those not asking for one without."""
    return true() if gpu else TrainingJob.gpu.is_(False)


def claim(session: Session, worker: str, lease_seconds: float = LEASE_SECONDS, gpu: bool = False) -> TrainingJob | None:
    """Give the oldest claimable job to ``worker`` under a lease, or None when there is nothing to do.

    A job that asks for a GPU goes only to a worker that has one, and such a worker takes those first.
    """
    now = utcnow()
    fail_exhausted(session, now)
    values = {
        "status": JobStatus.RUNNING.value,
        "worker": worker,
        "attempts": TrainingJob.attempts + 1,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "started_at": func.coalesce(TrainingJob.started_at, now),
        "stage": "claimed",
        "message": None,
    }
    oldest = select(TrainingJob.id).where(_claimable(now))
    if gpu:
        oldest = oldest.order_by(TrainingJob.gpu.desc(), TrainingJob.created_at, TrainingJob.id).limit(1)
    else:
        oldest = oldest.where(_gpu_ok(gpu)).order_by(TrainingJob.created_at, TrainingJob.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        job_id = session.scalar(oldest.with_for_update(skip_locked=True))
        if job_id is None:
            session.rollback()
            return None
        session.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return get_job(session, job_id)
    for _ in range(CLAIM_RETRIES):
        job_id = session.scalar(oldest)
        if job_id is None:
            session.rollback()
            return None
        result = session.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job_id, _claimable(now), _gpu_ok(gpu))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if result.rowcount == 1:  # type: ignore[attr-defined]
            job = get_job(session, job_id)
            session.refresh(job)
            return job
    return None


def _held_by(job_id: int, worker: str) -> ColumnElement[bool]:
    return and_(TrainingJob.id == job_id, TrainingJob.status == JobStatus.RUNNING.value, TrainingJob.worker == worker)


def _lease_lost(session: Session, job_id: int, worker: str) -> ConflictError:
    session.rollback()
    job = get_job(session, job_id)
    session.refresh(job)
    holder = f", held by worker {job.worker!r}" if job.status == JobStatus.RUNNING.value else ""
    return ConflictError(f"worker={worker!r} does not hold the lease of job id={job_id} (status {job.status}{holder})")


def heartbeat(
    session: Session,
    job_id: int,
    worker: str,
    progress: float,
    stage: str | None,
    message: str | None,
    lease_seconds: float = LEASE_SECONDS,
    epochs: list[dict[str, Any]] | None = None,
) -> bool:
    """Renew the lease and record progress (kept as an event); returns whether the job was cancelled."""
    job = get_job(session, job_id)
    if job.status == JobStatus.CANCELLED.value and job.worker == worker:
        return True
    result = session.execute(
        update(TrainingJob)
        .where(_held_by(job_id, worker))
        .values(
            lease_expires_at=utcnow() + timedelta(seconds=lease_seconds),
            progress=progress,
            stage=stage,
            message=message,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise _lease_lost(session, job_id, worker)
    progress_log.record(session, job_id, progress, stage, message, epochs)
    session.commit()
    return False


def fail(session: Session, job_id: int, worker: str, reason: str) -> TrainingJob:
    """The worker gives up: the job fails with its reason (a cancelled job stays cancelled)."""
    job = get_job(session, job_id)
    if job.status == JobStatus.CANCELLED.value and job.worker == worker:
        return job
    return _end(session, job, worker, status=JobStatus.FAILED.value, message=reason)


def _end(session: Session, job: TrainingJob, worker: str, **values: Any) -> TrainingJob:
    """Finish a job that `worker` holds (409 when its lease is lost), with `values` set."""
    result = session.execute(
        update(TrainingJob)
        .where(_held_by(job.id, worker))
        .values(finished_at=utcnow(), lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise _lease_lost(session, job.id, worker)
    session.commit()
    session.refresh(job)
    return job


def finish_comparison(session: Session, job_id: int, worker: str, comparison: ModelComparison) -> TrainingJob:
    """A compare job's table from the worker holding its lease: stored on the job, which is done."""
    job = get_job(session, job_id)
    if job.mode != COMPARE_MODE:
        raise ConflictError(f"job id={job_id} is a {job.mode} job; only a compare job delivers a comparison")
    if job.status == JobStatus.SUCCEEDED.value and job.worker == worker:
        return job  # a repeated upload after a lost answer
    return _end(
        session,
        job,
        worker,
        status=JobStatus.SUCCEEDED.value,
        comparison=comparison.model_dump(mode="json"),
        progress=1.0,
        stage="done",
        message=f"{len(comparison.rows)} models measured",
    )


def latest_comparison(session: Session, classifier: Classifier) -> ModelComparison | None:
    """The classifier's newest comparison, if a compare job has finished."""
    stored = session.scalar(
        select(TrainingJob.comparison)
        .where(
            TrainingJob.classifier_id == classifier.id,
            TrainingJob.mode == COMPARE_MODE,
            TrainingJob.status == JobStatus.SUCCEEDED.value,
        )
        .order_by(TrainingJob.finished_at.desc(), TrainingJob.id.desc())
        .limit(1)
    )
    return ModelComparison.model_validate(stored) if stored else None


def cancel(session: Session, job_id: int) -> TrainingJob:
    """Cancel a queued or running job; its worker learns it from the next heartbeat."""
    now = utcnow()
    result = session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status.in_(ACTIVE))
        .values(status=JobStatus.CANCELLED.value, finished_at=now, lease_expires_at=None, message="cancelled")
        .execution_options(synchronize_session=False)
    )
    session.commit()
    job = get_job(session, job_id)
    session.refresh(job)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConflictError(f"job id={job_id} is {job.status}; only queued or running jobs can be cancelled")
    return job


def _training_rows(session: Session, job: TrainingJob) -> tuple[list[str], list[datasets.TrainingImage]]:
    """The classes (groups with enough confirmed images) and their images, common groups included."""
    counts = trainable_groups(session, job.classifier)
    classes = sorted(name for name, n in counts.items() if n >= MIN_IMAGES_PER_GROUP)
    wanted = set(classes)
    return classes, [r for r in datasets.training_images(session, job.classifier) if r.group in wanted]


def dataset(session: Session, job: TrainingJob, indexes: duplicates.NearIndexes | None = None) -> Dataset:
    """What the trainer trains on: the classifier's confirmed images of every group that has enough of them,
    plus those of same-named common groups in other sites (see ``datasets.training_images``); ``none_classes``
    names the classes marked none of the above. 422 when every class is so marked (a change since queueing)."""
    classifier = job.classifier
    classes, rows = _training_rows(session, job)
    none = datasets.none_of_the_above_names(session, classifier)
    problem = _only_none(classifier, classes, none)
    if problem is not None:  # marked since the job was queued
        raise InvalidError(problem)
    # Near-duplicates share a cluster id, so the trainer keeps each cluster on one side of its split.
    model = default_model(session)
    own = None if model is None or indexes is None else indexes.get(session, classifier.id, model.sha256)
    cluster = duplicates.clusters(
        session,
        [(r.id, r.sha256) for r in rows],
        None if model is None else model.sha256,
        classifier.max_equal_distance,
        own,
    )
    return Dataset(
        job_id=job.id,
        site=classifier.site.name,
        classifier=classifier.name,
        classes=classes,
        none_classes=[c for c in classes if c in none],
        images=[DatasetImage(id=r.id, sha256=r.sha256, group=r.group, cluster=cluster[r.id]) for r in rows],
    )


def dataset_vectors(session: Session, job: TrainingJob) -> tuple[str | None, dict[str, np.ndarray]]:
    """The stored embeddings of the job's images under the default model (its sha256 first): a quick job
    trains on them instead of running the backbone again. Images not embedded yet are left out."""
    model = default_model(session)
    if model is None:
        return None, {}
    _classes, rows = _training_rows(session, job)
    return model.sha256, load_vectors(session, [r.sha256 for r in rows], model.sha256)
