"""Import jobs: every source (zip, browser upload, URL list, server folder, web search) runs in the background.

The API stages what the request carried (an uploaded zip or files) under ``<data_dir>/imports/<token>/``, inserts
an ``ImportJob`` and hands its id to ``ImportWorker``, a small pool of hub threads. A job records its progress
(total, done, counts per outcome) and one ``ImportItem`` per file; cancel is a flag checked between files.
Jobs left queued or running when the hub stopped are resumed at start-up: a job skips the ``done`` files it
had already recorded (each file's item and the job's ``done`` are committed together), so nothing is counted
twice. Imports are run by the hub process that staged them (single hub per data dir).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from camfleet_hub.core import urls
from camfleet_hub.core.errors import InvalidError, NotFoundError, TooLargeError, UnavailableError
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Classifier, Site
from camfleet_hub.imports.fetch import MAX_URLS, FetchLimits, iter_urls
from camfleet_hub.imports.importer import Importer, finish
from camfleet_hub.imports.models import ImportItem, ImportJob, ImportKind, ImportOutcome, ImportStatus
from camfleet_hub.imports.sources import (
    Entry,
    ImportLimits,
    count_folder_entries,
    count_zip_entries,
    iter_folder,
    iter_uploads,
    iter_zip,
    resolve_import_root,
)

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubCore, HubServices
    from camfleet_hub.datasets.duplicates import NearIndexes
    from camfleet_hub.datasets.embeddings import Embedder

log = logging.getLogger(__name__)

STAGING = "imports"
ZIP_NAME = "upload.zip"
FILES_DIR = "files"
TERMINAL = {ImportStatus.SUCCEEDED.value, ImportStatus.FAILED.value, ImportStatus.CANCELLED.value}
MAX_UPLOAD_FILES = 10_000
COPY_CHUNK = 1024 * 1024
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


# --------------------------------------------------------------------------- staging


def staging_dir(services: HubCore, token: str) -> Path:
    return services.settings.resolve(STAGING) / token


def new_staging(services: HubServices) -> tuple[str, Path]:
    token = uuid.uuid4().hex
    folder = staging_dir(services, token)
    folder.mkdir(parents=True)
    return token, folder


def _copy(src: BinaryIO, dest: Path, budget: int) -> int:
    """Copy a spooled upload to ``dest``; raises TooLargeError past ``budget`` bytes."""
    src.seek(0)
    written = 0
    with open(dest, "wb") as out:
        while chunk := src.read(COPY_CHUNK):
            written += len(chunk)
            if written > budget:
                raise TooLargeError(f"upload exceeds the limit of imports.max_upload_bytes={budget} bytes")
            out.write(chunk)
    return written


def stage_zip(services: HubServices, fileobj: BinaryIO) -> tuple[str, int]:
    """Keep an uploaded zip for the job; (staging token, files in it). Raises for an unreadable or huge one."""
    token, folder = new_staging(services)
    try:
        _copy(fileobj, folder / ZIP_NAME, services.settings.imports.max_upload_bytes)
        with open(folder / ZIP_NAME, "rb") as fh:
            total = count_zip_entries(fh)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return token, total


def stage_files(services: HubServices, files: list[tuple[str, BinaryIO]]) -> str:
    """Keep browser-uploaded files (as ``files/<index>``, names kept by the job) for the job."""
    if not files:
        raise InvalidError("files: send at least one file")
    if len(files) > MAX_UPLOAD_FILES:
        raise TooLargeError(f"files: {len(files)} files in one upload, over the limit of {MAX_UPLOAD_FILES}")
    token, folder = new_staging(services)
    budget = services.settings.imports.max_upload_bytes
    try:
        (folder / FILES_DIR).mkdir()
        for i, (_name, fh) in enumerate(files):
            budget -= _copy(fh, folder / FILES_DIR / str(i), budget)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return token


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
    worker = getattr(services, "import_worker", None)
    if worker is None:
        raise UnavailableError("import jobs are not running in this hub process")
    return worker  # type: ignore[no-any-return]


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


def job_view(session: Session, job: ImportJob) -> dict[str, Any]:
    site, classifier = site_of(session, job)
    params = {k: v for k, v in job.params.items() if k not in ("staging", "urls", "names")}
    if "urls" in job.params:
        params["urls"] = len(job.params["urls"])
    return {
        "id": job.id,
        "site": site.name,
        "classifier": classifier.name,
        "kind": job.kind,
        "status": job.status,
        "target_group": job.target_group,
        "params": params,
        "total": job.total,
        "done": job.done,
        "counts": {k: v for k, v in (job.counts or {}).items()},
        "message": job.message,
        "cancel_requested": job.cancel_requested,
        "created_by": job.created_by,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }


def item_view(item: ImportItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "name": item.name,
        "outcome": item.outcome,
        "reason": item.reason,
        "sha256": item.sha256,
        "image_id": item.image_id,
        "thumbnail_url": None if item.image_id is None else urls.image_thumbnail(item.image_id),
        "similar_image_id": item.similar_image_id,
        "similar_thumbnail_url": None if item.similar_image_id is None else urls.image_thumbnail(item.similar_image_id),
        "distance": item.distance,
    }


# --------------------------------------------------------------------------- the worker


class ImportWorker:
    """A few hub threads that run queued import jobs one file at a time."""

    def __init__(self, services: HubCore, embedder: Embedder, near: NearIndexes, threads: int = 2) -> None:
        self.services = services
        self.embedder = embedder
        self.near = near
        self.threads = threads
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._workers: list[threading.Thread] = []
        self._finished = threading.Condition()
        self._stopping = threading.Event()

    def start(self) -> None:
        """Re-queue jobs a previous run left queued or running (they resume after their last file), then start."""
        with self.services.sessions() as session:
            stale = list(
                session.scalars(
                    select(ImportJob.id)
                    .where(ImportJob.status.in_([ImportStatus.QUEUED.value, ImportStatus.RUNNING.value]))
                    .order_by(ImportJob.id)
                )
            )
            if stale:
                session.execute(
                    update(ImportJob)
                    .where(ImportJob.id.in_(stale), ImportJob.status == ImportStatus.RUNNING.value)
                    .values(status=ImportStatus.QUEUED.value, message="resumed after a hub restart")
                    .execution_options(synchronize_session=False)
                )
                session.commit()
                log.info("resuming %d import job(s) left by the previous run", len(stale))
            keep = {
                str(params.get("staging"))
                for params in session.scalars(select(ImportJob.params).where(ImportJob.id.in_(stale)))
                if params and params.get("staging")
            }
        root = self.services.settings.resolve(STAGING)
        if root.is_dir():  # uploads of jobs that finished or were cancelled while the hub was down
            for folder in root.iterdir():
                if folder.name not in keep:
                    shutil.rmtree(folder, ignore_errors=True)
        for job_id in stale:
            self._queue.put(job_id)
        for i in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"import-{i}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def stop(self) -> None:
        """Stop between files; a job cut short stays 'running' and resumes at the next start."""
        self._stopping.set()
        for _ in self._workers:
            self._queue.put(None)
        for thread in self._workers:
            thread.join(timeout=60)
        self._workers.clear()

    def submit(self, job_id: int) -> None:
        self._queue.put(job_id)

    def wait(self, job_id: int, timeout_s: float) -> bool:
        """Block until the job is finished (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.services.sessions() as session:
                status = session.scalar(select(ImportJob.status).where(ImportJob.id == job_id))
            if status is None or status in TERMINAL:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._finished:
                self._finished.wait(min(left, 0.5))

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            try:
                self.run(job_id)
            except Exception:  # noqa: BLE001 - one broken job must not end the worker
                log.exception("import job %s crashed", job_id)
                with contextlib.suppress(Exception), self.services.sessions() as session:
                    finish(session, job_id, ImportStatus.FAILED, "internal error; see the hub log")
            finally:
                with self._finished:
                    self._finished.notify_all()

    def _claim(self, session: Session, job_id: int) -> ImportJob | None:
        claimed = session.execute(
            update(ImportJob)
            .where(ImportJob.id == job_id, ImportJob.status == ImportStatus.QUEUED.value)
            .values(status=ImportStatus.RUNNING.value)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return session.get(ImportJob, job_id)

    def run(self, job_id: int) -> None:
        """Run one job to its end (succeeded, failed, cancelled)."""
        with self.services.sessions() as session:
            job = self._claim(session, job_id)
            if job is None:  # cancelled while queued (or gone): drop what it had staged
                left = session.get(ImportJob, job_id)
                if left is not None and left.status in TERMINAL and left.params.get("staging"):
                    shutil.rmtree(staging_dir(self.services, left.params["staging"]), ignore_errors=True)
                return
            classifier = session.get(Classifier, job.classifier_id)
            assert classifier is not None
            importer = Importer(self.services, self.embedder, self.near, job, classifier, limits_of(self.services))
            kind, params = job.kind, dict(job.params)
        staged = staging_dir(self.services, params["staging"]) if params.get("staging") else None
        try:
            with self._entries(job_id, kind, params, staged, importer.progress.done) as (entries, skip):
                completed = importer.run(
                    entries, lambda: self._stopping.is_set() or self._cancel_requested(job_id), skip
                )
            if not completed and not self._cancel_requested(job_id):
                log.info("import job %s paused by the hub stopping; it resumes at the next start", job_id)
                return
            status = ImportStatus.SUCCEEDED if completed else ImportStatus.CANCELLED
            message = None if completed else f"cancelled after {importer.progress.done} file(s)"
        except (InvalidError, TooLargeError, NotFoundError) as exc:
            status, message = ImportStatus.FAILED, str(exc)
        with self.services.sessions() as session:
            finish(session, job_id, status, message)
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        log.info("import job %s %s: %s", job_id, status.value, importer.progress.counts)

    def _cancel_requested(self, job_id: int) -> bool:
        with self.services.sessions() as session:
            return bool(session.scalar(select(ImportJob.cancel_requested).where(ImportJob.id == job_id)))

    @contextlib.contextmanager
    def _entries(
        self, job_id: int, kind: str, params: dict[str, Any], staged: Path | None, done: int
    ) -> Iterator[tuple[Iterator[Entry], int]]:
        """The job's entries and how many of them to skip (files a resumed job already did); records ``total``.

        URL lists and uploads start after the files already done (nothing fetched twice); archives and folders
        are read from the start and the first ``done`` entries skipped.
        """
        limits = limits_of(self.services)
        with contextlib.ExitStack() as stack:
            entries: Iterator[Entry]
            skip = done
            if kind == ImportKind.ZIP.value:
                assert staged is not None
                fh = stack.enter_context(open(staged / ZIP_NAME, "rb"))
                total = count_zip_entries(fh)
                entries = iter_zip(fh, limits)
            elif kind == ImportKind.UPLOAD.value:
                assert staged is not None
                names = [str(n) for n in params["names"]]
                total, skip = len(names), 0
                entries = iter_uploads(staged / FILES_DIR, names, limits, start=done)
            elif kind == ImportKind.FOLDER.value:
                root = resolve_import_root(params["path"], allowed_roots(self.services))
                total, entries = count_folder_entries(root, limits), iter_folder(root, limits)
            elif kind in (ImportKind.URLS.value, ImportKind.SEARCH.value):
                wanted = [str(u) for u in params["urls"]]
                total, skip = len(wanted), 0
                entries = iter_urls(wanted[done:], fetch_limits(self.services))
            else:
                raise InvalidError(f"kind={kind!r}: unknown import kind")
            self._set_total(job_id, total)
            yield entries, skip
            close: Callable[[], None] | None = getattr(entries, "close", None)
            if close is not None:
                close()

    def _set_total(self, job_id: int, total: int) -> None:
        with self.services.sessions() as session:
            session.execute(
                update(ImportJob)
                .where(ImportJob.id == job_id)
                .values(total=total)
                .execution_options(synchronize_session=False)
            )
            session.commit()
