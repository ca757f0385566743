"""Anomaly ("fits no known group") scoring, calibrated on held-out in-distribution images.

Two statistics per image: how unsure the calibrated classifier is (1 - top-1 probability) and how far its
embedding lies from the nearest training embeddings. Each becomes its percentile among held-out normal
images; the score is the larger percentile, so one threshold means "flag about X % of normal images".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

REFERENCE_POINTS = 513


class AnomalyCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["percentile", "confidence"] = "percentile"
    temperature: float = Field(default=1.0, gt=0.0)
    k: int = Field(default=5, ge=1, le=100, description="neighbours averaged for the distance")
    conf_ref: list[float] = Field(default_factory=list, description="sorted 1 - top1 of held-out images")
    dist_ref: list[float] | None = Field(default=None, description="sorted kNN distances of held-out images")
    threshold: float = Field(default=0.95, ge=0.0, le=1.0)
    target_flag_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    calibration_images: int = 0

    @model_validator(mode="after")
    def _refs(self) -> AnomalyCalibration:
        if self.method == "percentile" and not self.conf_ref:
            raise ValueError("method 'percentile' needs conf_ref values")
        return self


def _reference(values: np.ndarray) -> list[float]:
    values = np.sort(np.asarray(values, dtype=np.float64))
    if len(values) > REFERENCE_POINTS:
        values = np.quantile(values, np.linspace(0.0, 1.0, REFERENCE_POINTS))
    return [float(v) for v in values]


def _rank(value: float, ref: Sequence[float]) -> float:
    """Fraction of reference values strictly below `value` (0 = most normal, 1 = beyond all)."""
    return float(np.searchsorted(np.asarray(ref), value, side="left") / len(ref))


def score(top1_prob: float, distance: float | None, cal: AnomalyCalibration) -> float:
    if cal.method == "confidence":
        return float(min(1.0, max(0.0, 1.0 - top1_prob)))
    s = _rank(1.0 - top1_prob, cal.conf_ref)
    if distance is not None and cal.dist_ref:
        s = max(s, _rank(distance, cal.dist_ref))
    return s


def calibrate(
    top1_probs: Sequence[float] | np.ndarray,
    distances: Sequence[float] | np.ndarray | None,
    target_flag_rate: float = 0.05,
    temperature: float = 1.0,
    k: int = 5,
) -> AnomalyCalibration:
    """Reference distributions + the threshold that flags `target_flag_rate` of these (normal) images."""
    probs = np.asarray(top1_probs, dtype=np.float64)
    if probs.size == 0:
        raise ValueError("calibration needs at least one held-out image")
    dist = None if distances is None else np.asarray(distances, dtype=np.float64)
    if dist is not None and dist.shape != probs.shape:
        raise ValueError(f"distances shape {dist.shape} != top1_probs shape {probs.shape}")
    cal = AnomalyCalibration(
        temperature=temperature,
        k=k,
        conf_ref=_reference(1.0 - probs),
        dist_ref=None if dist is None else _reference(dist),
        target_flag_rate=target_flag_rate,
        calibration_images=int(probs.size),
    )
    dists = [None] * probs.size if dist is None else dist.tolist()
    scores = np.array([score(p, d, cal) for p, d in zip(probs.tolist(), dists, strict=True)])
    threshold = float(np.quantile(scores, 1.0 - target_flag_rate)) if target_flag_rate > 0 else 1.0
    return cal.model_copy(update={"threshold": min(1.0, threshold)})
