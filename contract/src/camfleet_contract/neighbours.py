"""Nearest-neighbour index of training embeddings (usearch): anomaly distances and similar images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime  # noqa: F401  loaded before usearch on purpose: the other order segfaults (usearch 2.x, ORT 1.2x)
from usearch.index import Index

from .bundle import INDEX, INDEX_LABELS, BundleError


class NeighbourIndex:
    """Cosine index over L2-normalised embeddings, keyed 0..N-1, with each key's class index."""

    def __init__(self, index: Index, labels: np.ndarray) -> None:
        self.index = index
        self.labels = labels

    @classmethod
    def build(cls, embeddings: np.ndarray, labels: np.ndarray) -> NeighbourIndex:
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(emb) != len(labels) or len(emb) == 0:
            raise ValueError(f"embeddings {emb.shape} and labels {np.shape(labels)} do not match")
        # float16: half the file and memory of float32 (a band-pooled stack's 12,512-d index of 3,068 images is
        # 77 MB instead of 154) and no less exact: the 5-nearest mean distance is within 1e-2 of the exact one
        # either way, the graph search's own error (docs/BENCHMARKS.md).
        index = Index(ndim=emb.shape[1], metric="cos", dtype="f16")
        index.add(np.arange(len(emb), dtype=np.uint64), emb)
        return cls(index, np.asarray(labels, dtype=np.int64))

    def save(self, bundle_dir: str | Path) -> None:
        bundle_dir = Path(bundle_dir)
        self.index.save(str(bundle_dir / INDEX))
        (bundle_dir / INDEX_LABELS).write_text(json.dumps(self.labels.tolist()))

    @classmethod
    def load(cls, bundle_dir: str | Path) -> NeighbourIndex | None:
        """The bundle's index, or None when the bundle has none."""
        bundle_dir = Path(bundle_dir)
        if not (bundle_dir / INDEX).is_file():
            return None
        try:
            index = Index.restore(str(bundle_dir / INDEX))
            labels = np.asarray(json.loads((bundle_dir / INDEX_LABELS).read_text()), dtype=np.int64)
        except (OSError, ValueError, RuntimeError) as exc:
            raise BundleError(f"cannot load {INDEX}: {exc}") from None
        if index is None or index.size != len(labels):
            raise BundleError(f"{INDEX} and {INDEX_LABELS} disagree on the number of entries")
        return cls(index, labels)

    def distances(self, embeddings: np.ndarray, k: int) -> np.ndarray:
        """Mean cosine distance of each embedding to its k nearest indexed embeddings."""
        emb = np.ascontiguousarray(np.atleast_2d(embeddings), dtype=np.float32)
        k = max(1, min(k, self.index.size))
        matches = self.index.search(emb, k)
        distances: np.ndarray = np.asarray(matches.distances, dtype=np.float64).reshape(len(emb), k)
        return distances.mean(axis=1)  # type: ignore[no-any-return]

    def nearest(self, embedding: np.ndarray, count: int) -> list[tuple[int, float]]:
        """(key, distance) of the nearest indexed embeddings."""
        m = self.index.search(np.asarray(embedding, dtype=np.float32), min(count, self.index.size))
        return [(int(k), float(d)) for k, d in zip(m.keys, m.distances, strict=True)]
