"""The pure parts of the full mode's recipe: the validation split, the learning-rate curve, early stopping."""

from __future__ import annotations

import math

import numpy as np


def stratified_split(labels: np.ndarray, test_size: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: `test_size` of every class (at least one image each side), shuffled."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_val = min(max(1, round(len(idx) * test_size)), len(idx) - 1)
        val.extend(idx[:n_val].tolist())
        train.extend(idx[n_val:].tolist())
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
