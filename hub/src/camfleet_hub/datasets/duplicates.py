"""Near-duplicate images of a classifier: an in-memory cosine index per classifier, pairs, and "keep one".

Exact duplicates (same content hash) never enter a classifier twice: the unique (classifier, sha256) key stops
them at import and ingest. What the person sees here are near-duplicates: two images whose embeddings (under the
ImageNet default bundle) lie closer than the classifier's ``max_equal_distance`` in cosine distance. A pair at
distance ~0 (the same pixels in two different files, e.g. re-saved with other metadata) is shown as ``exact``.

The index is append-only and keyed by image id; statuses are read from the database at query time, so images
deleted or restored elsewhere (triage, curation) need no index bookkeeping.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import onnxruntime  # noqa: F401 - must load before usearch: the other order segfaults (usearch 2.x, ORT 1.2x)
from sqlalchemy import select
from sqlalchemy.orm import Session
from usearch.index import Index as UsearchIndex

from camfleet_hub.core import urls
from camfleet_hub.core.errors import InvalidError, NotFoundError
from camfleet_hub.datasets import image_changes
from camfleet_hub.datasets.embeddings import load_vectors, vector_of
from camfleet_hub.datasets.models import Classifier, Embedding, Image, ImageStatus
from camfleet_hub.datasets.schemas import DuplicateImage, DuplicatePair

EXACT_DISTANCE = 1e-4
NEIGHBOURS = 6
MAX_RESOLVE = 1000
# Below this many images the index is searched exhaustively (exact); above, usearch's HNSW graph answers.
EXACT_SEARCH_BELOW = 50_000
EXACT_PAIRS_BELOW = 5_000


class ClassifierIndex:
    """Cosine index over one classifier's image embeddings under one model, keyed by image id."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.index = UsearchIndex(ndim=dim, metric="cos", dtype="f16")
        self.keys: set[int] = set()
        self.lock = threading.Lock()
        self.pairs_key: tuple[int, float] | None = None
        self.pairs: list[Pair] = []

    def add_many(self, ids: list[int], vectors: np.ndarray) -> None:
        with self.lock:
            fresh = [i for i, key in enumerate(ids) if key not in self.keys]
            if not fresh:
                return
            keys = np.asarray([ids[i] for i in fresh], dtype=np.uint64)
            self.index.add(keys, np.ascontiguousarray(vectors[fresh], dtype=np.float32))
            self.keys.update(int(k) for k in keys)

    def nearest(self, vectors: np.ndarray, count: int) -> list[list[tuple[int, float]]]:
        """(image id, cosine distance) of the nearest indexed images, per query vector.

        Exhaustive for a few queries on a small index; many queries (all pairs) use the HNSW graph beyond
        ``EXACT_PAIRS_BELOW`` images, so listing pairs stays fast at 100k images.
        """
        queries = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        with self.lock:
            size = len(self.keys)
            if size == 0:
                return [[] for _ in range(len(queries))]
            limit = EXACT_SEARCH_BELOW if len(queries) <= 16 else EXACT_PAIRS_BELOW
            found = self.index.search(queries, min(count, size), exact=size < limit)
        keys = np.asarray(found.keys).reshape(len(queries), -1)
        dists = np.asarray(found.distances, dtype=np.float64).reshape(len(queries), -1)
        counts = np.asarray(getattr(found, "counts", [keys.shape[1]])).reshape(len(queries))
        return [
            [(int(keys[q, j]), max(0.0, float(dists[q, j]))) for j in range(int(counts[q]))]
            for q in range(len(queries))
        ]


class NearIndexes:
    """The hub's per-classifier indexes, built from the embeddings table on first use and kept in sync by adds."""

    def __init__(self) -> None:
        self._indexes: dict[tuple[int, str], ClassifierIndex] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, classifier_id: int, model: str) -> ClassifierIndex | None:
        """The index of a classifier under ``model``, built now if needed; None when it has no embeddings yet."""
        key = (classifier_id, model)
        with self._lock:
            index = self._indexes.get(key)
            if index is not None:
                return index
            for old in [k for k in self._indexes if k[0] == classifier_id and k[1] != model]:
                del self._indexes[old]  # the default model changed: the old vectors are not comparable
            rows = session.execute(
                select(Image.id, Embedding.vector)
                .join(Embedding, Embedding.sha256 == Image.sha256)
                .where(Image.classifier_id == classifier_id, Embedding.model == model)
                .order_by(Image.id)
            ).all()
            if not rows:
                return None
            vectors = np.stack([vector_of(v) for _, v in rows])
            index = ClassifierIndex(vectors.shape[1])
            index.add_many([int(i) for i, _ in rows], vectors)
            self._indexes[key] = index
            return index

    def add(self, classifier_id: int, model: str, image_id: int, vector: np.ndarray) -> None:
        """Add one image to an index that is already built (otherwise the next build reads it from the table)."""
        with self._lock:
            index = self._indexes.get((classifier_id, model))
        if index is not None and index.dim == vector.shape[0]:
            index.add_many([image_id], vector[None, :])

    def forget(self, classifier_id: int) -> None:
        with self._lock:
            for key in [k for k in self._indexes if k[0] == classifier_id]:
                del self._indexes[key]


def live_ids(session: Session, classifier_id: int, ids: set[int]) -> dict[int, str]:
    """Status of those images that still exist in the classifier and are not DELETED."""
    if not ids:
        return {}
    rows = session.execute(
        select(Image.id, Image.status).where(
            Image.classifier_id == classifier_id, Image.id.in_(ids), Image.status != ImageStatus.DELETED.value
        )
    )
    return {int(i): s for i, s in rows}


def nearest_live(
    session: Session, index: ClassifierIndex | None, classifier_id: int, vector: np.ndarray, exclude: int | None = None
) -> tuple[int, float] | None:
    """The closest non-deleted image of the classifier to ``vector``: (image id, distance), or None."""
    if index is None:
        return None
    candidates = [(i, d) for i, d in index.nearest(vector, NEIGHBOURS)[0] if i != exclude]
    alive = live_ids(session, classifier_id, {i for i, _ in candidates})
    for image_id, distance in candidates:
        if image_id in alive:
            return image_id, distance
    return None


@dataclass(frozen=True)
class Pair:
    a: int
    b: int
    distance: float


def _candidate_pairs(index: ClassifierIndex, threshold: float) -> list[Pair]:
    """Pairs of indexed images (any status) closer than ``threshold``; cached until the index or threshold changes."""
    with index.lock:
        key = (len(index.keys), threshold)
        if index.pairs_key == key:
            return index.pairs
        ids = sorted(index.keys)
        vectors = np.asarray(index.index.get(np.asarray(ids, dtype=np.uint64)), dtype=np.float32)
    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, len(ids), 1024):
        chunk = ids[start : start + 1024]
        for a, found in zip(chunk, index.nearest(vectors[start : start + 1024], NEIGHBOURS), strict=True):
            for b, distance in found:
                if b != a and distance < threshold:
                    pair_key = (min(a, b), max(a, b))
                    pairs[pair_key] = min(distance, pairs.get(pair_key, distance))
    result = sorted((Pair(a, b, d) for (a, b), d in pairs.items()), key=lambda p: (p.distance, p.a, p.b))
    with index.lock:
        index.pairs_key, index.pairs = key, result
    return result


def find_pairs(session: Session, indexes: NearIndexes, classifier: Classifier, model: str | None) -> list[Pair]:
    """Every pair of non-deleted images closer than the classifier's threshold, closest first."""
    if model is None:
        return []
    index = indexes.get(session, classifier.id, model)
    if index is None:
        return []
    candidates = _candidate_pairs(index, classifier.max_equal_distance)
    if not candidates:
        return []
    alive = set(
        session.scalars(
            select(Image.id).where(Image.classifier_id == classifier.id, Image.status != ImageStatus.DELETED.value)
        )
    )
    return [p for p in candidates if p.a in alive and p.b in alive]


def pair_view(session: Session, pair: Pair) -> DuplicatePair:
    images = {img.id: img for img in session.scalars(select(Image).where(Image.id.in_((pair.a, pair.b))))}

    def side(image_id: int) -> DuplicateImage:
        img = images[image_id]
        return DuplicateImage(
            id=img.id,
            status=img.status,
            group=None if img.group is None else img.group.name,
            original_name=img.original_name,
            source=img.source,
            width=img.blob.width,
            height=img.blob.height,
            size=img.blob.size,
            thumbnail_url=urls.image_thumbnail(img.id),
            image_url=urls.image_content(img.id),
        )

    return DuplicatePair(
        kind="exact" if pair.distance <= EXACT_DISTANCE else "near",
        distance=round(pair.distance, 6),
        left=side(pair.a),
        right=side(pair.b),
    )


def set_threshold(session: Session, classifier: Classifier, value: float) -> Classifier:
    if not 0.0 <= value <= 2.0:
        raise InvalidError(f"max_equal_distance={value}: a cosine distance lies between 0 and 2")
    classifier.max_equal_distance = value
    session.commit()
    return classifier


def resolve(session: Session, classifier: Classifier, keep: int, drop: list[int], username: str) -> list[int]:
    """Keep one image and delete the others (DELETED: never offered again; undoable in the history)."""
    drop = sorted(set(drop) - {keep})
    if not drop:
        raise InvalidError("drop: name at least one image id other than keep")
    if len(drop) > MAX_RESOLVE:
        raise InvalidError(f"drop: {len(drop)} ids, over the limit of {MAX_RESOLVE}")
    wanted = {keep, *drop}
    found = {img.id: img for img in session.scalars(select(Image).where(Image.id.in_(wanted)))}
    for image_id in sorted(wanted):
        img = found.get(image_id)
        if img is None or img.classifier_id != classifier.id:
            raise NotFoundError(f"image id={image_id} is not in classifier {classifier.name!r}")
    if found[keep].status == ImageStatus.DELETED.value:
        raise InvalidError(f"keep={keep}: that image is DELETED; restore it first or keep another one")
    image_changes.delete_images(session, classifier, drop, username)  # one undoable history entry
    return drop


def clusters(
    session: Session,
    images: list[tuple[int, str]],
    model: str | None,
    threshold: float,
    own: ClassifierIndex | None = None,
) -> dict[int, int]:
    """Near-duplicate cluster of each (image id, sha256): the smallest image id of its connected component.

    Two images are linked when their embeddings lie closer than ``threshold``; images without an embedding are
    clusters of their own. The trainer keeps each cluster on one side of its train/validation split.

    When every image is in ``own`` (the classifier's live index: no common-group images of other sites), the
    links are that index's candidate pairs, which stay cached until images are added: a second job of the same
    dataset skips the search (measured 28 s at 20k images, 93 s at 50k on 2 cores when built from scratch).
    """
    cluster = {image_id: image_id for image_id, _ in images}
    if model is None or len(images) < 2:
        return cluster
    ids_wanted = set(cluster)
    if own is not None and ids_wanted <= own.keys:
        pairs = _candidate_pairs(own, threshold)
        return _components(cluster, [(p.a, p.b) for p in pairs if p.a in ids_wanted and p.b in ids_wanted])
    vectors = load_vectors(session, [sha for _, sha in images], model)
    known = [(i, sha) for i, sha in images if sha in vectors]
    if len(known) < 2:
        return cluster
    matrix = np.stack([vectors[sha] for _, sha in known])
    index = ClassifierIndex(matrix.shape[1])
    ids = [i for i, _ in known]
    index.add_many(ids, matrix)
    by_sha: dict[str, list[int]] = {}
    for i, sha in known:  # the same bytes under two ids (common groups of other sites) are one cluster
        by_sha.setdefault(sha, []).append(i)
    links = [(group[0], other) for group in by_sha.values() for other in group[1:]]
    for start in range(0, len(ids), 1024):
        for a, found in zip(
            ids[start : start + 1024], index.nearest(matrix[start : start + 1024], NEIGHBOURS), strict=True
        ):
            links.extend((a, b) for b, d in found if b != a and d < threshold)
    return _components(cluster, links)


def _components(cluster: dict[int, int], links: list[tuple[int, int]]) -> dict[int, int]:
    """Union-find over the links: every id of `cluster` mapped to the smallest id of its component."""
    parent = dict(cluster)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {i: root(i) for i in cluster}
