"""The pure parts of the full mode's recipe: the validation split, the learning-rate curve, early stopping."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def sample_groups(clusters: Sequence[int | None]) -> np.ndarray | None:
    """Group ids for a split from the samples' near-duplicate clusters; None when no sample has one."""
    if all(c is None for c in clusters):
        return None
    ids: dict[object, int] = {}
    return np.array([ids.setdefault(("c", c) if c is not None else ("i", i), len(ids)) for i, c in enumerate(clusters)])


def grouped_by_class(labels: np.ndarray, groups: np.ndarray) -> dict[int, list[np.ndarray]]:
    """Members of each group, filed under the class most of its images carry (sorted group order)."""
    out: dict[int, list[np.ndarray]] = {}
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        cls = int(np.bincount(labels[members]).argmax())
        out.setdefault(cls, []).append(members)
    return out


def stratified_split(
    labels: np.ndarray, test_size: float, seed: int = 0, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: `test_size` of every class (at least one image each side), shuffled.

    With `groups` (near-duplicate clusters) every group lands wholly on one side, so no image is validated
    against its own near-copy in training.
    """
    rng = np.random.default_rng(seed)
    if groups is not None:
        return _grouped_split(labels, test_size, rng, groups)
    train: list[int] = []
    val: list[int] = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_val = min(max(1, round(len(idx) * test_size)), len(idx) - 1)
        val.extend(idx[:n_val].tolist())
        train.extend(idx[n_val:].tolist())
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64)


def _grouped_split(
    labels: np.ndarray, test_size: float, rng: np.random.Generator, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    train: list[int] = []
    val: list[int] = []
    for _cls, members in sorted(grouped_by_class(labels, groups).items()):
        order = rng.permutation(len(members))
        total = sum(len(m) for m in members)
        n_val = min(max(1, round(total * test_size)), total - 1)
        taken = 0
        for j in order:
            m = members[j]
            if taken < n_val and taken + len(m) <= total - 1:
                val.extend(m.tolist())
                taken += len(m)
            else:
                train.extend(m.tolist())
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64)


def lr_factor(progress: float, epochs: float, warmup: float, min_ratio: float = 0.01) -> float:
    """Multiplier of the peak learning rate at `progress` epochs: linear warm-up, then cosine to `min_ratio`."""
    if warmup > 0 and progress < warmup:
        return max(progress, 0.0) / warmup
    span = max(epochs - warmup, 1e-9)
    t = min(max((progress - warmup) / span, 0.0), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


class EarlyStopping:
    """Stop after `patience` epochs without validation gain: higher accuracy, or equal accuracy and lower loss."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best: tuple[float, float] = (-math.inf, math.inf)  # (accuracy, loss)
        self.stale = 0

    def update(self, val_acc: float, val_loss: float) -> bool:
        """Record an epoch; True when it is the best so far (its weights should be kept)."""
        acc, loss = self.best
        improved = val_acc > acc or (val_acc == acc and val_loss < loss)
        if improved:
            self.best, self.stale = (val_acc, val_loss), 0
        else:
            self.stale += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience
