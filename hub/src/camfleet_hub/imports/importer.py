"""The per-file pipeline of an import job: check, hash, decode, thumbnail, embed, near-duplicate check, store, row.

Files are prepared in small chunks (so the embedding runs batched) and then written one by one, each in its own
short transaction: the store write (original + thumbnail) comes first, then the blob, embedding, image,
``ImportItem`` and the job's progress in one commit. A crash or cancel between files leaves at most an
unreferenced object in the content-addressed store, never a row without its bytes.

Outcomes per file: ``imported``; ``duplicate`` (the classifier already holds these bytes); ``previously_deleted``
(the bytes were DELETED here once: never offered again); ``near_duplicate`` (imported, but as NEW in the triage
inbox whatever the target group, with the close image and the distance, so a person decides); ``rejected``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from camfleet_contract.images import ImageError, probe_image, thumbnail_jpeg
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.store.base import sha256_hex
from camfleet_hub.datasets import duplicates
from camfleet_hub.datasets.embeddings import decode_for_embedding, store_embeddings, vector_of
from camfleet_hub.datasets.media import THUMB_PREFIX, THUMB_SIZE
from camfleet_hub.datasets.models import Blob, Classifier, Embedding, Group, Image, ImageSource, ImageStatus
from camfleet_hub.imports.models import ImportItem, ImportJob, ImportKind, ImportOutcome, ImportStatus
from camfleet_hub.imports.sources import Entry, ImportLimits
from camfleet_hub.ingest.persist import insert_ignore

if TYPE_CHECKING:
    from camfleet_contract.runtime import ClassifierRuntime
    from camfleet_hub.core.container import HubCore
    from camfleet_hub.datasets.duplicates import NearIndexes
    from camfleet_hub.datasets.embeddings import Embedder

log = logging.getLogger(__name__)

CHUNK = 16
SOURCE_OF = {
    ImportKind.ZIP.value: ImageSource.IMPORT,
    ImportKind.UPLOAD.value: ImageSource.UPLOAD,
    ImportKind.FOLDER.value: ImageSource.FOLDER,
    ImportKind.URLS.value: ImageSource.URL,
    ImportKind.SEARCH.value: ImageSource.SEARCH,
}
FOLDER_PER_CLASS = {ImportKind.ZIP.value, ImportKind.FOLDER.value}


@dataclass
class Prepared:
    """One entry after the CPU work, before anything is written."""

    entry: Entry
    outcome: ImportOutcome | None = None
    reason: str | None = None
    sha: str | None = None
    image_id: int | None = None
    group: str | None = None
    fmt: str = ""
    width: int = 0
    height: int = 0
    rgb: np.ndarray | None = None
    thumb: bytes | None = None
    vector: np.ndarray | None = None


@dataclass
class Progress:
    done: int
    counts: dict[str, Any] = field(default_factory=dict)

    def count(self, outcome: ImportOutcome, group: str | None = None) -> None:
        self.done += 1
        self.counts[outcome.value] = int(self.counts.get(outcome.value, 0)) + 1
        if group is not None and outcome == ImportOutcome.IMPORTED:
            groups = dict(self.counts.get("groups", {}))
            groups[group] = int(groups.get(group, 0)) + 1
            self.counts["groups"] = groups


class Importer:
    """Runs the entries of one job into its classifier; stops between files when the job is cancelled."""

    def __init__(
        self,
        services: HubCore,
        embedder: Embedder,
        near: NearIndexes,
        job: ImportJob,
        classifier: Classifier,
        limits: ImportLimits,
    ) -> None:
        self.services = services
        self.embedder = embedder
        self.near = near
        self.job_id = job.id
        self.kind = job.kind
        self.target_group = job.target_group
        self.created_by = job.created_by
        self.origin_prefix = f"search: {job.params.get('term', '')} | " if job.kind == ImportKind.SEARCH.value else ""
        self.classifier_id = classifier.id
        self.threshold = classifier.max_equal_distance
        self.limits = limits
        self.progress = Progress(done=job.done, counts=dict(job.counts or {}))
        self._groups: dict[str, int] = {}
        self._seen: dict[str, int] = {}
        self._pending: set[str] = set()  # prepared, maybe not written yet (the writer runs one chunk behind)

    # ------------------------------------------------------------------ driving

    def run(self, entries: Iterator[Entry], is_cancelled: Callable[[], bool], skip: int | None = None) -> bool:
        """Import the entries after the first ``skip`` (default: the ``done`` already recorded by a resumed job).

        Returns False when ``is_cancelled`` said stop (checked between files). The next chunk is read, decoded and
        embedded in a helper thread while this one is written, so reading, inference and writes overlap.
        """
        rest = islice(entries, self.progress.done if skip is None else skip, None)
        with ThreadPoolExecutor(1, thread_name_prefix="import-prepare") as pool:
            ahead: Future[tuple[list[Prepared], str | None]] = pool.submit(self._next_chunk, rest, is_cancelled)
            while True:
                prepared, model = ahead.result()
                if not prepared:
                    return True
                if is_cancelled():
                    return False
                ahead = pool.submit(self._next_chunk, rest, is_cancelled)
                for i, item in enumerate(prepared):
                    if i and is_cancelled():
                        return False
                    self._write(item, model)

    def _next_chunk(self, rest: Iterator[Entry], is_cancelled: Callable[[], bool]) -> tuple[list[Prepared], str | None]:
        """Read up to CHUNK entries (fewer when the job is cancelled meanwhile: URL fetches can be slow) and do
        their CPU work: hash, checks, decode, thumbnail, embedding."""
        chunk: list[Entry] = []
        for entry in rest:
            chunk.append(entry)
            if len(chunk) == CHUNK or is_cancelled():
                break
        if not chunk:
            return [], None
        with self.services.sessions() as session:
            loaded = self.embedder.runtime(session)
            prepared = [self._prepare(session, e) for e in chunk]
            session.rollback()  # end the read transaction before the slower CPU work
        if loaded is None:
            return prepared, None
        model, runtime = loaded
        self._embed(model, runtime, prepared)
        return prepared, model

    # ------------------------------------------------------------------ preparing

    def _destination(self, entry: Entry) -> tuple[str | None, str | None]:
        """(group or None for the inbox, rejection reason)."""
        if self.target_group is not None:
            return self.target_group, None
        if self.kind in FOLDER_PER_CLASS:
            if entry.group_reason is not None:
                return None, entry.group_reason
            return entry.group, None
        return None, None

    def _prepare(self, session: Session, entry: Entry) -> Prepared:
        item = Prepared(entry=entry)
        if entry.reason is not None or entry.data is None:
            item.outcome, item.reason = ImportOutcome.REJECTED, entry.reason or "no data"
            return item
        item.group, reason = self._destination(entry)
        if reason is not None:
            item.outcome, item.reason = ImportOutcome.REJECTED, reason
            return item
        data = entry.data
        item.sha = sha = sha256_hex(data)
        if sha in self._seen or sha in self._pending:
            item.outcome, item.image_id = ImportOutcome.DUPLICATE, self._seen.get(sha)
            item.reason = "the same file came earlier in this import"
            return item
        self._pending.add(sha)
        existing = session.execute(
            select(Image.id, Image.status).where(Image.classifier_id == self.classifier_id, Image.sha256 == sha)
        ).first()
        if existing is not None:
            item.image_id = existing[0]
            if existing[1] == ImageStatus.DELETED.value:
                item.outcome = ImportOutcome.PREVIOUSLY_DELETED
                item.reason = f"this image was deleted from the classifier (image id={existing[0]}); restore it there"
            else:
                item.outcome = ImportOutcome.DUPLICATE
                item.reason = f"already in the classifier as image id={existing[0]}"
            return item
        try:
            item.fmt, w, h = probe_image(data)
            rgb = decode_for_embedding(data, self.limits.max_pixels)
            item.thumb = thumbnail_jpeg(rgb, size=THUMB_SIZE)
        except ImageError as exc:
            item.outcome, item.reason = ImportOutcome.REJECTED, str(exc)
            return item
        if w != h and (rgb.shape[0] > rgb.shape[1]) != (h > w):  # EXIF rotation turned it
            w, h = h, w
        item.width, item.height, item.rgb = w, h, rgb
        return item

    def _embed(self, model: str, runtime: ClassifierRuntime, prepared: list[Prepared]) -> None:
        """Vectors for the files to import: the stored one when the blob was embedded before, else computed."""
        todo = [p for p in prepared if p.outcome is None and p.rgb is not None]
        if not todo:
            return
        with self.services.sessions() as session:
            known = {
                sha: vector_of(data)
                for sha, data in session.execute(
                    select(Embedding.sha256, Embedding.vector).where(
                        Embedding.model == model, Embedding.sha256.in_({p.sha for p in todo})
                    )
                )
            }
        for p in todo:
            if p.sha in known:
                p.vector, p.rgb = known[p.sha], None
        todo = [p for p in todo if p.vector is None]
        if not todo:
            return
        vectors = self.embedder.embed(runtime, [p.rgb for p in todo if p.rgb is not None])
        for p, v in zip(todo, vectors, strict=True):
            p.vector = v
            p.rgb = None

    # ------------------------------------------------------------------ writing

    def _group_id(self, session: Session, name: str) -> int:
        if name not in self._groups:
            query = select(Group.id).where(Group.classifier_id == self.classifier_id, Group.name == name)
            group_id = session.scalar(query)
            if group_id is None:
                session.add(Group(classifier_id=self.classifier_id, name=name))
                try:
                    session.commit()
                except IntegrityError:  # created concurrently: use theirs
                    session.rollback()
                group_id = session.scalar(query)
                assert group_id is not None
            self._groups[name] = group_id
        return self._groups[name]

    def _record(self, session: Session, item: Prepared, outcome: ImportOutcome, **extra: Any) -> None:
        """The item row and the job's progress, in the caller's transaction (then committed)."""
        self.progress.count(outcome, item.group)
        session.add(
            ImportItem(
                job_id=self.job_id,
                name=item.entry.name[:2048],
                outcome=outcome.value,
                reason=item.reason,
                sha256=item.sha,
                image_id=extra.get("image_id", item.image_id),
                similar_image_id=extra.get("similar_image_id"),
                distance=extra.get("distance"),
            )
        )
        session.execute(
            update(ImportJob)
            .where(ImportJob.id == self.job_id)
            .values(done=self.progress.done, counts=dict(self.progress.counts))
            .execution_options(synchronize_session=False)
        )
        session.commit()

    def _write(self, item: Prepared, model: str | None) -> None:
        """Write one prepared file: its bytes, blob, embedding and image, then its item (one transaction)."""
        with self.services.sessions() as session:
            if item.outcome is not None:
                if item.image_id is None and item.sha in self._seen:
                    item.image_id = self._seen[item.sha]
                self._record(session, item, item.outcome)
                return
            assert item.sha is not None and item.entry.data is not None and item.thumb is not None
            similar = self._similar(session, item, model)
            group_id = None
            if similar is None and item.group is not None:
                group_id = self._group_id(session, item.group)
            self._store_bytes(session, item, model)
            image = self._new_image(item, group_id)
            session.add(image)
            try:
                session.flush()
            except IntegrityError:  # the same bytes arrived concurrently (ingest, another import)
                session.rollback()
                item.reason = "arrived concurrently from another source"
                self._record(session, item, ImportOutcome.DUPLICATE)
                return
            image_id = image.id
            if similar is not None:
                item.reason = f"close to image id={similar[0]} (distance {similar[1]:.4f}); left in the inbox"
                item.group = None
                self._record(
                    session,
                    item,
                    ImportOutcome.NEAR_DUPLICATE,
                    image_id=image_id,
                    similar_image_id=similar[0],
                    distance=similar[1],
                )
            else:
                self._record(session, item, ImportOutcome.IMPORTED, image_id=image_id)
        self._seen[item.sha] = image_id
        if item.vector is not None and model is not None:
            self.near.add(self.classifier_id, model, image_id, item.vector)

    def _similar(self, session: Session, item: Prepared, model: str | None) -> tuple[int, float] | None:
        """The closest live image (id, distance) when it is under the classifier's threshold."""
        if item.vector is None or model is None:
            return None
        index = self.near.get(session, self.classifier_id, model)
        found = duplicates.nearest_live(session, index, self.classifier_id, item.vector)
        return found if found is not None and found[1] < self.threshold else None

    def _store_bytes(self, session: Session, item: Prepared, model: str | None) -> None:
        """Original and thumbnail into the store first, then the blob row and the embedding (not committed)."""
        assert item.sha is not None and item.entry.data is not None and item.thumb is not None
        store = self.services.store
        store.put(item.entry.data)
        thumb_sha = store.put(item.thumb, prefix=THUMB_PREFIX)
        blob = {
            "sha256": item.sha,
            "size": len(item.entry.data),
            "width": item.width,
            "height": item.height,
            "format": item.fmt,
            "thumb_sha256": thumb_sha,
            "created_at": utcnow(),
        }
        insert_ignore(session, Blob, [blob], ["sha256"])
        session.execute(
            update(Blob)
            .where(Blob.sha256 == item.sha, Blob.thumb_sha256.is_(None))
            .values(thumb_sha256=thumb_sha)
            .execution_options(synchronize_session=False)
        )
        if item.vector is not None and model is not None:
            store_embeddings(session, model, {item.sha: item.vector})

    def _new_image(self, item: Prepared, group_id: int | None) -> Image:
        """The image row: in ``group_id`` (labelled by the job's creator) or NEW in the inbox."""
        assert item.sha is not None
        origin = item.entry.origin
        return Image(
            classifier_id=self.classifier_id,
            sha256=item.sha,
            status=ImageStatus.GROUP.value if group_id is not None else ImageStatus.NEW.value,
            group_id=group_id,
            source=SOURCE_OF[self.kind].value,
            original_name=item.entry.name[:512],
            origin=None if origin is None else (self.origin_prefix + origin)[:2048],
            labelled_by=self.created_by[:64] if group_id is not None else None,
            import_job_id=self.job_id,
        )


def finish(session: Session, job_id: int, status: ImportStatus, message: str | None = None) -> None:
    session.execute(
        update(ImportJob)
        .where(ImportJob.id == job_id)
        .values(status=status.value, message=message, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
