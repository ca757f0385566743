"""Probabilities as answers and the prediction log show them: every group, most likely first, to 6 decimals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SCORE_DTYPE = np.dtype("<f4")
"""How probabilities are kept: an answer and its log row are ranked from the same float32 values."""
PROBABILITY_DECIMALS = 6


def rounded(scores: np.ndarray) -> list[float]:
    """Whole-array conversion: a per-group Python loop was most of the ranking for a 1,000-group model."""
    return np.round(scores.astype(np.float64), PROBABILITY_DECIMALS).tolist()  # type: ignore[no-any-return]


def ranked(classes: Sequence[str], scores: np.ndarray, k: int | None = None) -> dict[str, float]:
    """Group → probability, most likely first (the first `k`, or all); ties keep the model's order."""
    order = np.argsort(-scores, kind="stable")[:k]
    return dict(zip([classes[i] for i in order], rounded(scores[order]), strict=True))
