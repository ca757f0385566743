"""Anomaly ("fits no known group") scoring, calibrated on held-out in-distribution images.

Statistics per image, each made its percentile among held-out normal images and then combined, so one
threshold means "flag about X % of normal images":

- ``confidence``: 1 - calibrated top-1 probability;
- ``distance``: mean cosine distance of the embedding to its k nearest training embeddings;
- ``energy``: -logsumexp(logits), the head's total evidence (low for images of no known class);
- ``scaled_energy``: the energy of SCALE-shaped features (Xu et al. 2024): the unit embedding scaled by
  exp(sum of all activations / sum of those above a percentile) before the (linear) head. The head reads the
  unit embedding, so the shaped logits are exp(r) * (logits - bias) + bias, computable from the model's two
  outputs and the head's bias stored here.

Method ``percentile`` (older bundles) is the larger of the confidence and distance percentiles; ``combined``
takes the ``statistics`` listed, each with its reference values in ``refs``, and combines their percentiles by
``combine`` (mean or max).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

REFERENCE_POINTS = 513
DEFAULT_SCALE_PERCENTILE = 80.0

Statistic = Literal["confidence", "distance", "energy", "scaled_energy"]


class AnomalyCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["percentile", "confidence", "combined"] = "percentile"
    temperature: float = Field(default=1.0, gt=0.0)
    k: int = Field(default=5, ge=1, le=100, description="neighbours averaged for the distance")
    conf_ref: list[float] = Field(default_factory=list, description="sorted 1 - top1 of held-out images")
    dist_ref: list[float] | None = Field(default=None, description="sorted kNN distances of held-out images")
    threshold: float = Field(default=0.95, ge=0.0, le=1.0)
    target_flag_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    calibration_images: int = 0
    statistics: list[Statistic] = Field(default_factory=list, description="method 'combined': what is combined")
    refs: dict[Statistic, list[float]] = Field(default_factory=dict, description="sorted held-out values per statistic")
    combine: Literal["mean", "max"] = "mean"
    head_bias: list[float] | None = Field(default=None, description="the linear head's bias, for scaled_energy")
    scale_percentile: float = Field(default=DEFAULT_SCALE_PERCENTILE, gt=0.0, lt=100.0)

    @model_validator(mode="after")
    def _refs(self) -> AnomalyCalibration:
        if self.method == "percentile" and not self.conf_ref:
            raise ValueError("method 'percentile' needs conf_ref values")
        if self.method == "combined":
            if not self.statistics:
                raise ValueError("method 'combined' needs at least one statistic")
            missing = [s for s in self.statistics if not self.refs.get(s)]
            if missing:
                raise ValueError(f"method 'combined': no reference values for statistics {missing}")
            if "scaled_energy" in self.statistics and not self.head_bias:
                raise ValueError("statistic 'scaled_energy' needs head_bias")
        return self


def _reference(values: np.ndarray) -> list[float]:
    values = np.sort(np.asarray(values, dtype=np.float64))
    if len(values) > REFERENCE_POINTS:
        values = np.quantile(values, np.linspace(0.0, 1.0, REFERENCE_POINTS))
    return [float(v) for v in values]


def _rank(value: float, ref: Sequence[float]) -> float:
    """Fraction of reference values strictly below `value` (0 = most normal, 1 = beyond all)."""
    return float(np.searchsorted(np.asarray(ref), value, side="left") / len(ref))


def logsumexp(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    out: np.ndarray = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return out


def scale_factor(embedding: np.ndarray, percentile: float = DEFAULT_SCALE_PERCENTILE) -> np.ndarray:
    """SCALE's exp(r), r = sum of all activations / sum of those at or above the percentile (per row).

    Scale-free, so the unit embedding gives the same r as the raw pooled features it was normalised from.
    """
    x = np.asarray(embedding, dtype=np.float64)
    cut = np.percentile(x, percentile, axis=1, keepdims=True)
    top = np.where(x >= cut, x, 0.0).sum(axis=1)
    factor: np.ndarray = np.exp(x.sum(axis=1) / np.maximum(top, 1e-12))
    return factor


def statistics(
    logits: np.ndarray,
    embedding: np.ndarray | None,
    distances: np.ndarray | None,
    cal: AnomalyCalibration,
    names: Sequence[Statistic] | None = None,
) -> dict[Statistic, np.ndarray]:
    """Per-image values (N,) of the named statistics (default: the calibration's); higher = more unusual.

    A statistic whose input is missing (no index for `distance`, no embedding for `scaled_energy`) is left out.
    """
    z = np.asarray(logits, dtype=np.float64)
    out: dict[Statistic, np.ndarray] = {}
    for name in names if names is not None else cal.statistics:
        if name == "confidence":
            t = z / cal.temperature
            out[name] = 1.0 - np.exp(t.max(axis=1) - logsumexp(t))
        elif name == "distance" and distances is not None:
            out[name] = np.asarray(distances, dtype=np.float64)
        elif name == "energy":
            out[name] = -logsumexp(z)
        elif name == "scaled_energy" and embedding is not None and cal.head_bias:
            bias = np.asarray(cal.head_bias, dtype=np.float64)
            factor = scale_factor(embedding, cal.scale_percentile)[:, None]
            out[name] = -logsumexp(factor * (z - bias) + bias)
    return out


def combined_scores(values: Mapping[Statistic, np.ndarray], cal: AnomalyCalibration) -> np.ndarray:
    """Percentile of each statistic among the held-out references, combined by `cal.combine` (N,)."""
    ranks = [
        np.searchsorted(np.asarray(cal.refs[name]), v, side="left") / len(cal.refs[name])
        for name, v in values.items()
        if cal.refs.get(name)
    ]
    if not ranks:
        raise ValueError(f"no statistic of {list(cal.statistics)} could be computed for these images")
    stacked = np.stack(ranks)
    combined: np.ndarray = stacked.mean(axis=0) if cal.combine == "mean" else stacked.max(axis=0)
    return combined


def batch_scores(
    logits: np.ndarray, embedding: np.ndarray | None, distances: np.ndarray | None, cal: AnomalyCalibration
) -> np.ndarray:
    """Anomaly scores of a batch from the model's outputs, for every method (what hub and agent both call)."""
    if cal.method == "combined":
        return combined_scores(statistics(logits, embedding, distances, cal), cal)
    z = np.asarray(logits, dtype=np.float64) / cal.temperature
    top1 = np.exp(z.max(axis=1) - logsumexp(z))
    dists = [None] * len(top1) if distances is None else [float(d) for d in distances]
    return np.array([score(float(p), d, cal) for p, d in zip(top1, dists, strict=True)])


def score(top1_prob: float, distance: float | None, cal: AnomalyCalibration) -> float:
    """One image's score from its top-1 probability and kNN distance (methods 'percentile' and 'confidence';
    'combined' needs the logits: use batch_scores)."""
    if cal.method == "combined":
        values: dict[Statistic, np.ndarray] = {"confidence": np.array([1.0 - top1_prob])}
        if distance is not None:
            values["distance"] = np.array([distance])
        return float(combined_scores({k: v for k, v in values.items() if k in cal.statistics}, cal)[0])
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
    flagged_anyway: np.ndarray | None = None,
) -> AnomalyCalibration:
    """Reference distributions + the threshold that flags `target_flag_rate` of these (normal) images, counting
    those in `flagged_anyway` (a none-of-the-above class on top) as flagged whatever their score."""
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
    return cal.model_copy(update={"threshold": _threshold(scores, target_flag_rate, flagged_anyway)})


def _threshold(scores: np.ndarray, target_flag_rate: float, flagged_anyway: np.ndarray | None) -> float:
    """The score above which `target_flag_rate` of these images are flagged, those flagged anyway included."""
    if target_flag_rate <= 0:
        return 1.0
    if flagged_anyway is not None:
        scores = np.where(np.asarray(flagged_anyway, dtype=bool), 1.0, scores)
    return min(1.0, float(np.quantile(scores, 1.0 - target_flag_rate)))


def calibrate_combined(
    values: Mapping[Statistic, np.ndarray],
    head_bias: Sequence[float] | None = None,
    combine: Literal["mean", "max"] = "mean",
    target_flag_rate: float = 0.05,
    temperature: float = 1.0,
    k: int = 5,
    scale_percentile: float = DEFAULT_SCALE_PERCENTILE,
    flagged_anyway: np.ndarray | None = None,
) -> AnomalyCalibration:
    """Method 'combined' from held-out normal images' statistics (see `statistics`): reference values per
    statistic and the threshold that flags `target_flag_rate` of these images (`flagged_anyway`: as `calibrate`).
    conf_ref / dist_ref are filled too when those statistics are given, for readers of the older fields."""
    names = list(values)
    sizes = {len(np.asarray(v)) for v in values.values()}
    if not names or len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"calibration needs the same, non-zero number of values per statistic, got {sizes}")
    arrays = {n: np.asarray(v, dtype=np.float64) for n, v in values.items()}
    cal = AnomalyCalibration(
        method="combined",
        temperature=temperature,
        k=k,
        statistics=names,
        refs={n: _reference(v) for n, v in arrays.items()},
        combine=combine,
        conf_ref=_reference(arrays["confidence"]) if "confidence" in arrays else [],
        dist_ref=_reference(arrays["distance"]) if "distance" in arrays else None,
        head_bias=None if head_bias is None else [float(b) for b in head_bias],
        scale_percentile=scale_percentile,
        target_flag_rate=target_flag_rate,
        calibration_images=sizes.pop(),
    )
    scores = combined_scores(arrays, cal)
    return cal.model_copy(update={"threshold": _threshold(scores, target_flag_rate, flagged_anyway)})
