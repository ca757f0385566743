"""The import worker: a few hub threads that run queued import jobs one file at a time.

Jobs left queued or running when the hub stopped are resumed at start-up: a job skips the ``done`` files it had
already recorded (each file's item and the job's ``done`` are committed together), so nothing is counted twice.
Cancel is a flag checked between files.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from camfleet_hub.core.errors import InvalidError, NotFoundError, TooLargeError
from camfleet_hub.datasets.models import Classifier
from camfleet_hub.imports.fetch import iter_urls
from camfleet_hub.imports.importer import Importer, finish
from camfleet_hub.imports.jobs import TERMINAL, allowed_roots, fetch_limits, limits_of
from camfleet_hub.imports.models import ImportJob, ImportKind, ImportStatus
from camfleet_hub.imports.sources import (
    Entry,
    count_folder_entries,
    count_zip_entries,
    iter_folder,
    iter_uploads,
    iter_zip,
    resolve_import_root,
)
from camfleet_hub.imports.staging import FILES_DIR, STAGING, ZIP_NAME, staging_dir

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubCore
    from camfleet_hub.datasets.duplicates import NearIndexes
    from camfleet_hub.datasets.embeddings import Embedder

log = logging.getLogger(__name__)


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
