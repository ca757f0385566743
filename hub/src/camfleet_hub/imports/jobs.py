"""Import jobs: every source (zip, browser upload, URL list, server folder, web search) runs in the background.

The API stages what the request carried (an uploaded zip or files, ``staging``), inserts an ``ImportJob`` and
hands its id to the ``ImportWorker`` (``worker``), a small pool of hub threads. A job records its progress
(total, done, counts per outcome) and one ``ImportItem`` per file; cancel is a flag checked between files.
Imports are run by the hub process that staged them (single hub per data dir).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from camfleet_hub.core import urls
from camfleet_hub.core.errors import InvalidError, NotFoundError, TooLargeError, UnavailableError
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Classifier, Site
from camfleet_hub.imports.fetch import MAX_URLS, FetchLimits
from camfleet_hub.imports.models import ImportItem, ImportJob, ImportKind, ImportOutcome, ImportStatus
from camfleet_hub.imports.schemas import ImportItemPublic, ImportJobPublic
from camfleet_hub.imports.sources import (
    ImportLimits,
)

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubCore, HubServices
    from camfleet_hub.imports.worker import ImportWorker

TERMINAL = {ImportStatus.SUCCEEDED.value, ImportStatus.FAILED.value, ImportStatus.CANCELLED.value}
MAX_ITEMS_PAGE = 1000


def limits_of(services: HubCore) -> ImportLimits:
    s = services.settings
    return ImportLimits(max_pixels=s.ingest.max_pixels, max_upload_bytes=s.imports.max_upload_bytes)


def fetch_limits(services: HubCore) -> FetchLimits:
    s = services.settings.imports
    return FetchLimits(
        max_bytes=s.url_max_bytes,
        timeout_s=s.url_timeout_s,
        max_redirects=s.url_max_redirects,
        allow_private=s.url_allow_private,
    )


def allowed_roots(services: HubCore) -> list[Path] | None:
    roots = services.settings.imports.roots
    return [Path(r) for r in roots] if roots else None


# --------------------------------------------------------------------------- jobs


def create_job(
    services: HubServices,
    session: Session,
    classifier: Classifier,
    kind: ImportKind,
    created_by: str,
    target_group: str | None,
    params: dict[str, Any],
    total: int = 0,
) -> ImportJob:
    """Insert a queued job and hand it to the worker."""
    if target_group is not None:
        target_group = crud.checked_name(target_group, "group")
    job = ImportJob(
        classifier_id=classifier.id,
        kind=kind.value,
        status=ImportStatus.QUEUED.value,
        target_group=target_group,
        params=params,
        total=total,
        counts={},
        created_by=created_by[:64],
    )
    session.add(job)
    session.commit()
    worker = services_worker(services)
    worker.submit(job.id)
    return job


def services_worker(services: HubServices) -> ImportWorker:
    worker = services.import_worker
    if worker is None:
        raise UnavailableError("import jobs are not running in this hub process")
    return worker


def check_urls(raw: list[str]) -> list[str]:
    urls_ = [u.strip() for u in raw if u.strip()]
    if not urls_:
        raise InvalidError("urls: give at least one URL")
    if len(urls_) > MAX_URLS:
        raise TooLargeError(f"urls: {len(urls_)} URLs, over the limit of {MAX_URLS}")
    return urls_


def get_job(session: Session, job_id: int) -> ImportJob:
    job = session.get(ImportJob, job_id)
    if job is None:
        raise NotFoundError(f"import job id={job_id} not found")
    return job


def site_of(session: Session, job: ImportJob) -> tuple[Site, Classifier]:
    classifier = session.get(Classifier, job.classifier_id)
    assert classifier is not None
    site = session.get(Site, classifier.site_id)
    assert site is not None
    return site, classifier


def cancel(session: Session, job: ImportJob) -> ImportJob:
    """Ask a job to stop between files; a queued job is cancelled at once. Finished jobs are left alone."""
    if job.status in TERMINAL:
        return job
    job.cancel_requested = True
    if job.status == ImportStatus.QUEUED.value:
        job.status = ImportStatus.CANCELLED.value
        job.message = "cancelled before it started"
    session.commit()
    return job


def list_jobs(session: Session, classifier: Classifier, limit: int = 50, offset: int = 0) -> list[ImportJob]:
    query = select(ImportJob).where(ImportJob.classifier_id == classifier.id).order_by(ImportJob.id.desc())
    return list(session.scalars(query.limit(max(1, min(limit, 200))).offset(max(0, offset))))


def list_items(
    session: Session, job: ImportJob, outcome: ImportOutcome | None, limit: int, after: int = 0
) -> tuple[list[ImportItem], int]:
    """Items in id order after ``after`` (keyset pagination), and how many match in all."""
    where = [ImportItem.job_id == job.id]
    if outcome is not None:
        where.append(ImportItem.outcome == outcome.value)
    total = int(session.scalar(select(func.count()).select_from(ImportItem).where(*where)) or 0)
    query = select(ImportItem).where(*where, ImportItem.id > after).order_by(ImportItem.id)
    return list(session.scalars(query.limit(max(1, min(limit, MAX_ITEMS_PAGE))))), total


def job_view(session: Session, job: ImportJob) -> ImportJobPublic:
    """The job's answer; the params keep the URL count, not the URLs, and never the staging token or names."""
    site, classifier = site_of(session, job)
    params = {k: v for k, v in job.params.items() if k not in ("staging", "urls", "names")}
    if "urls" in job.params:
        params["urls"] = len(job.params["urls"])
    return ImportJobPublic(
        id=job.id,
        site=site.name,
        classifier=classifier.name,
        kind=job.kind,
        status=job.status,
        target_group=job.target_group,
        params=params,
        total=job.total,
        done=job.done,
        counts=dict(job.counts or {}),
        message=job.message,
        cancel_requested=job.cancel_requested,
        created_by=job.created_by,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


def item_view(item: ImportItem) -> ImportItemPublic:
    similar = item.similar_image_id
    return ImportItemPublic(
        id=item.id,
        name=item.name,
        outcome=item.outcome,
        reason=item.reason,
        sha256=item.sha256,
        image_id=item.image_id,
        thumbnail_url=None if item.image_id is None else urls.image_thumbnail(item.image_id),
        similar_image_id=similar,
        similar_thumbnail_url=None if similar is None else urls.image_thumbnail(similar),
        distance=item.distance,
    )
