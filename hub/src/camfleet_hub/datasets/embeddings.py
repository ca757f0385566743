"""Image embeddings under the ImageNet default bundle: computed once per blob, stored, and back-filled.

Every image that enters the hub (imports and camera frames) gets its blob embedded once and the vector stored in
the ``embeddings`` table, keyed by (blob sha256, default bundle sha256). Imports embed inline (they need the vector
for the near-duplicate check); camera frames and images that arrived before a default model existed, or under an
older one, are filled in by ``EmbeddingBackfill``, a background thread of the hub.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from camfleet_contract.images import ImageError, decode_image
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.store.base import ObjectNotFound
from camfleet_hub.datasets.models import Embedding, Image
from camfleet_hub.ingest.persist import insert_ignore
from camfleet_hub.serving.classify import RuntimeCache
from camfleet_hub.training.announce import default_model

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubCore, HubServices
    from camfleet_hub.datasets.duplicates import NearIndexes

log = logging.getLogger(__name__)

# JPEGs are decoded at a reduced DCT scale that still leaves both sides >= this (the thumbnail and the model's
# resize both need 256 px at most), which is several times faster for large photos.
DECODE_DRAFT = (256, 256)
BACKFILL_BATCH = 32
BACKFILL_IDLE_S = 5.0
BACKFILL_RESCAN_S = 600.0


def decode_for_embedding(data: bytes, max_pixels: int) -> np.ndarray:
    """The one decode used before embedding (imports, back-fill and the benchmark alike); raises ImageError."""
    return decode_image(data, max_pixels=max_pixels, draft=DECODE_DRAFT)


def vector_bytes(vector: np.ndarray) -> bytes:
    """An L2-normalised vector as little-endian float16 bytes (the stored form)."""
    return np.asarray(vector, dtype="<f2").tobytes()


def vector_of(data: bytes) -> np.ndarray:
    """The stored float16 bytes back as a float32 vector."""
    return np.frombuffer(data, dtype="<f2").astype(np.float32)


class Embedder:
    """Embeds decoded RGB images with the current default bundle (ONNX Runtime), reloading when it changes."""

    def __init__(self, services: HubCore) -> None:
        self.services = services
        self._runtimes = RuntimeCache(services, max_entries=1)
        self._lock = threading.Lock()
        self._model: tuple[int, str] | None = None

    def current_model(self, session: Session) -> str | None:
        """sha256 of the default bundle in production, or None when none was uploaded."""
        model = default_model(session)
        return None if model is None else model.sha256

    def runtime(self, session: Session) -> tuple[str, ClassifierRuntime] | None:
        """(model sha256, runtime) of the current default, loaded once; None without a default model."""
        model = default_model(session)
        if model is None:
            return None
        with self._lock:
            runtime = self._runtimes.get(model)
            self._model = (model.id, model.sha256)
        return model.sha256, runtime

    def embed(self, runtime: ClassifierRuntime, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of decoded images."""
        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = np.asarray(runtime.embed(list(images)), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit: np.ndarray = vectors / np.maximum(norms, 1e-12)
        return unit


def load_vectors(session: Session, shas: Sequence[str], model: str) -> dict[str, np.ndarray]:
    """Stored vectors (float32) of these blobs under `model`; blobs without one are absent."""
    wanted = sorted(set(shas))
    vectors: dict[str, np.ndarray] = {}
    for start in range(0, len(wanted), 500):
        rows = session.execute(
            select(Embedding.sha256, Embedding.vector).where(
                Embedding.model == model, Embedding.sha256.in_(wanted[start : start + 500])
            )
        )
        vectors.update({sha: vector_of(v) for sha, v in rows})
    return vectors


def store_embeddings(session: Session, model: str, vectors: dict[str, np.ndarray]) -> None:
    """Insert (sha256, model) rows that do not exist yet; the caller commits."""
    now = utcnow()
    rows = [
        {"sha256": sha, "model": model, "dim": int(v.shape[0]), "vector": vector_bytes(v), "created_at": now}
        for sha, v in vectors.items()
    ]
    insert_ignore(session, Embedding, rows, ["sha256", "model"])


class EmbeddingBackfill:
    """A hub thread that embeds every image whose blob has no embedding under the current default model."""

    def __init__(self, services: HubServices, embedder: Embedder, near: NearIndexes) -> None:
        self.services = services
        self.embedder = embedder
        self.near = near
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._cursor = 0
        self._model: str | None = None
        self._since_rescan = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="embedding-backfill", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def nudge(self) -> None:
        """Look for missing embeddings now (e.g. after a default model was uploaded)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # noqa: BLE001 - a database or store hiccup must not end the thread
                log.exception("embedding back-fill failed; retrying")
                busy = False
            if not busy:
                self._wake.wait(BACKFILL_IDLE_S)
                self._wake.clear()
                self._since_rescan += BACKFILL_IDLE_S
                if self._since_rescan >= BACKFILL_RESCAN_S:  # catch rows committed out of id order
                    self._since_rescan, self._cursor = 0.0, 0

    def run_once(self) -> bool:
        """Embed one batch of images missing an embedding; True when there may be more."""
        settings = self.services.settings
        with self.services.sessions() as session:
            loaded = self.embedder.runtime(session)
            if loaded is None:
                return False
            model, runtime = loaded
            if model != self._model:
                self._model, self._cursor = model, 0
            query = (
                select(Image.id, Image.classifier_id, Image.sha256)
                .outerjoin(Embedding, and_(Embedding.sha256 == Image.sha256, Embedding.model == model))
                .where(Embedding.sha256.is_(None), Image.id > self._cursor)
                .order_by(Image.id)
                .limit(BACKFILL_BATCH)
            )
            rows = list(session.execute(query))
            if not rows:
                return False
            self._cursor = rows[-1][0]
            decoded: dict[str, np.ndarray] = {}
            for _id, _clf, sha in rows:
                if sha in decoded:
                    continue
                try:
                    decoded[sha] = decode_for_embedding(self.services.store.get(sha), settings.ingest.max_pixels)
                except (ObjectNotFound, ImageError) as exc:
                    log.warning("cannot embed blob %s: %s", sha, exc)
            if not decoded:
                return True
            shas = list(decoded)
            vectors = self.embedder.embed(runtime, [decoded[s] for s in shas])
            by_sha = dict(zip(shas, vectors, strict=True))
            store_embeddings(session, model, by_sha)
            session.commit()
        for image_id, classifier_id, sha in rows:
            if sha in by_sha:
                self.near.add(classifier_id, model, image_id, by_sha[sha])
        return True
