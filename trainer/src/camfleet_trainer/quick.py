"""The quick model: a linear head on frozen features, with out-of-fold checks and anomaly calibration.

Out-of-fold (OOF) predictions stand in for held-out in-distribution images: every training image is scored
by a head that never saw it, so temperature scaling, the anomaly threshold and the label-error ranking all
rest on honest numbers without setting images aside.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from camfleet_contract.anomaly import AnomalyCalibration, Statistic, calibrate, calibrate_combined, statistics
from camfleet_contract.runtime import softmax
from camfleet_trainer.embed import l2_normalize
from camfleet_trainer.schedule import grouped_by_class

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 5
DEFAULT_NEIGHBOURS = 5
DEFAULT_L2 = 0.1  # on standardized features; best 5-fold CV accuracy on clothing train/ of 0.01..1 (bench/train.py)
DEFAULT_FLAG_RATE = 0.05
# LBFGS iterations: on clothing (3,068 images) 50 give the same CV accuracy (0.868 vs 0.867) and label-error
# precision (0.850) as running to convergence (~90), for 40 % less time; an early stop also regularises.
MAX_ITER = 50
MIN_TEMPERATURE = 0.25
MAX_TEMPERATURE = 10.0
MAX_LABEL_NEIGHBOURS = 50
# The anomaly statistics combined (the larger of their percentiles among out-of-fold images): chosen by
# leave-two-classes-out on clothing train/ (bench/ood.py, docs/BENCHMARKS.md): the energy of the head's logits
# catches kinds near the known ones (dress + shorts left out: 0.25 vs 0.09 for the distance), the kNN distance
# kinds far from them (shoes + skirt: 0.68 vs 0.06 for the energy); the mean of the two percentiles lost both.
DEFAULT_ANOMALY: tuple[Statistic, ...] = ("energy", "distance")
DEFAULT_ANOMALY_COMBINE: Literal["mean", "max"] = "max"


@dataclass(frozen=True)
class QuickOptions:
    """Knobs of the quick model; the defaults measured best by 5-fold CV on the clothing train split."""

    l2: float = DEFAULT_L2
    standardize: bool = True
    use_flips: bool = True
    balanced: bool = True
    folds: int = DEFAULT_FOLDS
    neighbours: int = DEFAULT_NEIGHBOURS
    target_flag_rate: float = DEFAULT_FLAG_RATE
    seed: int = 0
    # Empty: the older 'percentile' method (max of the confidence and distance percentiles).
    anomaly: tuple[Statistic, ...] = DEFAULT_ANOMALY
    anomaly_combine: Literal["mean", "max"] = DEFAULT_ANOMALY_COMBINE


@dataclass
class LinearHead:
    """logits = x @ weight.T + bias (standardization folded in), where x is the L2-normalised embedding or,
    with `on_embedding=False`, the raw pooled features (full mode's probe start, whose head reads those).

    The quick head reads the same unit vector the bundle outputs as `embedding` and the hub stores per image, so
    a hub job can train on the vectors computed at import (measured on clothing: the same CV accuracy as a head
    on raw features, 0.867 vs 0.868). `logits` takes raw features either way.
    """

    weight: np.ndarray  # (C, D) float32
    bias: np.ndarray  # (C,) float32
    on_embedding: bool = True

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = (l2_normalize(features) if self.on_embedding else features).astype(np.float64)
        return x @ self.weight.T.astype(np.float64) + self.bias.astype(np.float64)


@dataclass
class QuickResult:
    """The final head, its calibration and the out-of-fold evidence behind it."""

    head: LinearHead
    temperature: float
    calibration: AnomalyCalibration
    oof_logits: np.ndarray  # (N, C)
    oof_probs: np.ndarray  # (N, C) temperature-scaled
    oof_distances: np.ndarray  # (N,) mean cosine distance to the k nearest embeddings of the other folds
    label_probs: np.ndarray  # (N, C) OOF model and neighbours combined: what the label-error ranking uses
    folds: int
    metrics: dict[str, Any] = field(default_factory=dict)


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Balanced weights n / (C * n_c), so a big class does not drown a small one."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


def fit_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    l2: float = DEFAULT_L2,
    standardize: bool = True,
    extra: np.ndarray | None = None,
    balanced: bool = True,
    on_embedding: bool = True,
) -> LinearHead:
    """Multinomial logistic regression with an L2 penalty (LBFGS, deterministic), class-balanced by default.

    `extra` are more views of the same images (mirror images), with the same labels. Features are L2-normalised
    first unless `on_embedding` is False (see LinearHead). The optimisation runs in float32: measured 3-8x
    faster than float64 on 2 cores, with the same loss to 1e-6 and the same predictions; standardization is
    folded into the head in float64.
    """
    x = features if extra is None else np.concatenate([features, extra])
    if on_embedding:
        x = l2_normalize(x)
    y = labels if extra is None else np.concatenate([labels, labels])
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    if standardize:
        mean = xt.mean(0)
        std = xt.std(0).clamp_min(1e-6)
        xs = (xt - mean) / std
    else:
        mean = torch.zeros(xt.shape[1])
        std = torch.ones(xt.shape[1])
        xs = xt
    w = torch.zeros(num_classes, xt.shape[1], requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    cw = torch.from_numpy(class_weights(np.asarray(y), num_classes)).float() if balanced else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=cw)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=MAX_ITER, history_size=20, line_search_fn="strong_wolfe", tolerance_grad=1e-6
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(xs @ w.T + b, yt) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        w64, b64 = w.double(), b.double()
        mean64, std64 = mean.double(), std.double()
        weight = w64 / std64  # fold the standardization into the head: ONNX sees the plain embedding
        bias = b64 - (w64 * (mean64 / std64)).sum(1)
    return LinearHead(weight.numpy().astype(np.float32), bias.numpy().astype(np.float32), on_embedding)


def stratified_folds(
    labels: np.ndarray, folds: int, seed: int = 0, groups: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Fold number per sample; k shrinks to the smallest class size (at least 2) so every fold sees every class.

    With `groups` (near-duplicate clusters) each group shares one fold, so out-of-fold predictions never see a
    near-copy of the image in training.
    """
    counts = np.bincount(labels)
    k = int(max(2, min(folds, counts[counts > 0].min())))
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    offset = 0
    if groups is not None:
        for _cls, members in sorted(grouped_by_class(labels, groups).items()):
            order = rng.permutation(len(members))
            for n, j in enumerate(order):
                assignment[members[j]] = (n + offset) % k
            offset += len(members)
        return assignment, k
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        # Continue the round-robin across classes so fold sizes stay balanced.
        assignment[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return assignment, k


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T minimizing the NLL of softmax(logits / T) on held-out logits, T in [MIN_T, MAX_T].

    With few, well separated images the OOF NLL keeps falling as T → 0, which would make every later
    prediction look 100 % sure and the confidence statistic useless; the lower bound keeps it honest.
    """
    z = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = float(log_t.detach().exp())
    return float(np.clip(t, MIN_TEMPERATURE, MAX_TEMPERATURE)) if np.isfinite(t) else 1.0


@dataclass
class NeighbourEvidence:
    """What the nearest training images say about each image (exact cosine search, blockwise)."""

    oof_distances: np.ndarray  # (N,) mean cosine distance to the k nearest images of the *other* folds
    label_share: np.ndarray  # (N, C) class shares among the `label_k` nearest other images (any fold)
    label_k: int


def label_neighbours(n: int) -> int:
    """Neighbours that vote on an image's label: about sqrt(n), between 5 and 50."""
    return int(np.clip(round(np.sqrt(n)), 5, MAX_LABEL_NEIGHBOURS))


def neighbour_evidence(
    features: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    num_classes: int,
    k: int,
    label_k: int | None = None,
    chunk: int = 1024,
) -> NeighbourEvidence:
    """OOF kNN distances (the runtime's anomaly statistic) and neighbour label shares, in one pass.

    Exact search on the unit vectors: for a few thousand images one blockwise matrix product is faster
    than building a usearch index per fold (measured 0.6 s vs 7 s for 3,068 images on 2 cores) and
    agrees with the runtime's HNSW search on >99 % of the neighbours.
    """
    z = l2_normalize(features)
    n = len(z)
    label_k = min(label_k or label_neighbours(n), n - 1)
    distances = np.zeros(n)
    share = np.zeros((n, num_classes))
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        sim = z[rows] @ z.T
        sim[np.arange(len(rows)), rows] = -np.inf  # never your own neighbour
        if label_k > 0:
            near = np.argpartition(-sim, label_k - 1, axis=1)[:, :label_k]
            np.add.at(share, (np.repeat(np.arange(len(rows)), label_k) + start, labels[near].ravel()), 1.0)
        sim[folds[rows][:, None] == folds[None, :]] = -np.inf  # only images of the other folds
        kk = max(1, min(k, n - int(np.bincount(folds).max())))
        top = -np.partition(-sim, kk - 1, axis=1)[:, :kk]
        distances[rows] = np.mean(1.0 - np.clip(top, -1.0, 1.0), axis=1)
    return NeighbourEvidence(distances, share / max(label_k, 1), label_k)


def label_probabilities(model_probs: np.ndarray, neighbour_share: np.ndarray, label_k: int) -> np.ndarray:
    """Per-image class beliefs for the label-error ranking: the normalised geometric mean of the OOF
    model's probabilities (image and mirror averaged) and the neighbours' class shares (smoothed by 1/k).

    On the clothing set with 5 % of labels flipped this ranks flipped images better than the model alone
    (precision at k 0.84 vs 0.79-0.80, 3 seeds; see bench/label_errors.py): the linear head and the
    neighbours err on different images.
    """
    q = np.sqrt(model_probs * (neighbour_share + 1.0 / max(label_k, 1)))
    return q / q.sum(axis=1, keepdims=True)


def classification_metrics(labels: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision/recall/support and the confusion matrix."""
    c = len(classes)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class: dict[str, dict[str, float | int]] = {}
    recalls = []
    for i, name in enumerate(classes):
        tp = int(confusion[i, i])
        support = int(confusion[i].sum())
        predicted_n = int(confusion[:, i].sum())
        recall = tp / support if support else 0.0
        precision = tp / predicted_n if predicted_n else 0.0
        if support:
            recalls.append(recall)
        per_class[name] = {"precision": round(precision, 4), "recall": round(recall, 4), "support": support}
    return {
        "accuracy": round(float((labels == predicted).mean()) if len(labels) else 0.0, 4),
        "balanced_accuracy": round(float(np.mean(recalls)) if recalls else 0.0, 4),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def anomaly_calibration(
    oof_logits: np.ndarray,
    unit: np.ndarray,
    oof_distances: np.ndarray,
    oof_scaled_energy: np.ndarray,
    head: LinearHead,
    temperature: float,
    opts: QuickOptions,
) -> AnomalyCalibration:
    """The bundle's anomaly calibration from out-of-fold outputs: `opts.anomaly` combined, or the older method."""
    if not opts.anomaly:
        probs = softmax(oof_logits, temperature)
        return calibrate(
            probs.max(axis=1), oof_distances, opts.target_flag_rate, temperature=temperature, k=opts.neighbours
        )
    draft = AnomalyCalibration(method="confidence", temperature=temperature)
    others = [n for n in opts.anomaly if n != "scaled_energy"]
    values = statistics(oof_logits, unit, oof_distances, draft, others)
    if "scaled_energy" in opts.anomaly:
        values["scaled_energy"] = oof_scaled_energy
    return calibrate_combined(
        {n: values[n] for n in opts.anomaly},
        head_bias=head.bias.tolist() if "scaled_energy" in opts.anomaly else None,
        combine=opts.anomaly_combine,
        target_flag_rate=opts.target_flag_rate,
        temperature=temperature,
        k=opts.neighbours,
    )


def train_quick(
    features: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    flipped: np.ndarray | None = None,
    options: QuickOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
    groups: np.ndarray | None = None,
) -> QuickResult:
    """OOF logits + kNN distances → temperature → anomaly calibration; then the head on every image."""
    opts = options or QuickOptions()
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(classes)
    extra_all = flipped if opts.use_flips else None
    assignment, k = stratified_folds(labels, opts.folds, opts.seed, groups)
    oof_logits = np.zeros((len(labels), num_classes))
    mirror_logits = np.zeros((len(labels), num_classes)) if flipped is not None else None
    unit = l2_normalize(features)
    scaled = np.zeros(len(labels))  # SCALE-shaped energy needs each fold head's own bias
    for fold in range(k):
        test = assignment == fold
        train = ~test
        head = fit_head(
            features[train],
            labels[train],
            num_classes,
            opts.l2,
            opts.standardize,
            None if extra_all is None else extra_all[train],
            opts.balanced,
        )
        oof_logits[test] = head.logits(features[test])
        if mirror_logits is not None and flipped is not None:
            mirror_logits[test] = head.logits(flipped[test])
        if "scaled_energy" in opts.anomaly:
            shaped = AnomalyCalibration(method="confidence", head_bias=head.bias.tolist())
            scaled[test] = statistics(oof_logits[test], unit[test], None, shaped, ["scaled_energy"])["scaled_energy"]
        if progress is not None:
            progress(fold + 1, k + 1)
    neighbours = neighbour_evidence(features, labels, assignment, num_classes, opts.neighbours)
    oof_dist = neighbours.oof_distances
    temperature = fit_temperature(oof_logits, labels)
    oof_probs = softmax(oof_logits, temperature)
    both_views = oof_probs if mirror_logits is None else (oof_probs + softmax(mirror_logits, temperature)) / 2
    label_probs = label_probabilities(both_views, neighbours.label_share, neighbours.label_k)
    head = fit_head(features, labels, num_classes, opts.l2, opts.standardize, extra_all, opts.balanced)
    calibration = anomaly_calibration(oof_logits, unit, oof_dist, scaled, head, temperature, opts)
    if progress is not None:
        progress(k + 1, k + 1)
    metrics = classification_metrics(labels, oof_probs.argmax(axis=1), classes)
    oof_nll = float(-np.log(np.clip(oof_probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
    summary: dict[str, Any] = {
        "mode": "quick",
        "images": int(len(labels)),
        "folds": k,
        "oof_accuracy": metrics["accuracy"],
        "oof_balanced_accuracy": metrics["balanced_accuracy"],
        "oof_nll": round(oof_nll, 4),
        "per_class": metrics["per_class"],
        "confusion": metrics["confusion"],
        "temperature": round(temperature, 4),
        "anomaly_threshold": round(calibration.threshold, 4),
        "l2": opts.l2,
        "standardize": opts.standardize,
        "flips": extra_all is not None,
        "balanced": opts.balanced,
        "label_neighbours": neighbours.label_k,
    }
    return QuickResult(
        head=head,
        temperature=temperature,
        calibration=calibration,
        oof_logits=oof_logits,
        oof_probs=oof_probs,
        oof_distances=oof_dist,
        label_probs=label_probs,
        folds=k,
        metrics=summary,
    )
