"""The quick model: a linear head on frozen features, with out-of-fold checks and anomaly calibration.

Out-of-fold (OOF) predictions stand in for held-out in-distribution images: every training image is scored
by a head that never saw it, so temperature scaling, the anomaly threshold and the label-error ranking all
rest on honest numbers without setting images aside.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from camfleet_contract.anomaly import AnomalyCalibration, calibrate
from camfleet_contract.neighbours import NeighbourIndex
from camfleet_contract.runtime import softmax
from camfleet_trainer.embed import l2_normalize

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 5
DEFAULT_NEIGHBOURS = 5
DEFAULT_L2 = 0.1  # on standardized features; best of 1e-4..3 on clothing validation/ (see report)
DEFAULT_FLAG_RATE = 0.05
MAX_ITER = 300
MIN_TEMPERATURE = 0.25
MAX_TEMPERATURE = 10.0


@dataclass(frozen=True)
class QuickOptions:
    """Knobs of the quick model; the defaults are what measured best on the clothing validation split."""

    l2: float = DEFAULT_L2
    standardize: bool = True
    use_flips: bool = True
    folds: int = DEFAULT_FOLDS
    neighbours: int = DEFAULT_NEIGHBOURS
    target_flag_rate: float = DEFAULT_FLAG_RATE
    seed: int = 0


@dataclass
class LinearHead:
    """logits = features @ weight.T + bias, on raw backbone features (standardization folded in)."""

    weight: np.ndarray  # (C, D) float32
    bias: np.ndarray  # (C,) float32

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features.astype(np.float64) @ self.weight.T.astype(np.float64) + self.bias.astype(np.float64)


@dataclass
class QuickResult:
    """The final head, its calibration and the out-of-fold evidence behind it."""

    head: LinearHead
    temperature: float
    calibration: AnomalyCalibration
    oof_logits: np.ndarray  # (N, C)
    oof_probs: np.ndarray  # (N, C) temperature-scaled
    oof_distances: np.ndarray  # (N,) mean cosine distance to the k nearest embeddings of the other folds
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
) -> LinearHead:
    """Class-balanced multinomial logistic regression with an L2 penalty (LBFGS, float64, deterministic).

    `extra` are more views of the same images (mirror images), with the same labels.
    """
    x = features if extra is None else np.concatenate([features, extra])
    y = labels if extra is None else np.concatenate([labels, labels])
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    if standardize:
        mean = xt.mean(0)
        std = xt.std(0).clamp_min(1e-6)
    else:
        mean = torch.zeros(xt.shape[1], dtype=torch.float64)
        std = torch.ones(xt.shape[1], dtype=torch.float64)
    xs = (xt - mean) / std
    w = torch.zeros(num_classes, xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    cw = torch.from_numpy(class_weights(np.asarray(y), num_classes))
    loss_fn = torch.nn.CrossEntropyLoss(weight=cw)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=MAX_ITER, history_size=20, line_search_fn="strong_wolfe", tolerance_grad=1e-7
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(xs @ w.T + b, yt) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        weight = w / std  # fold the standardization into the head: ONNX sees raw features
        bias = b - (w * (mean / std)).sum(1)
    return LinearHead(weight.numpy().astype(np.float32), bias.numpy().astype(np.float32))


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """Fold number per sample; k shrinks to the smallest class size (at least 2) so every fold sees every class."""
    counts = np.bincount(labels)
    k = int(max(2, min(folds, counts[counts > 0].min())))
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    offset = 0
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


def knn_distances(train: np.ndarray, train_labels: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Mean cosine distance of each query to its k nearest training embeddings (the runtime's statistic)."""
    index = NeighbourIndex.build(l2_normalize(train), train_labels)
    return index.distances(l2_normalize(query), k)


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


def train_quick(
    features: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    flipped: np.ndarray | None = None,
    options: QuickOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> QuickResult:
    """OOF logits + kNN distances → temperature → anomaly calibration; then the head on every image."""
    opts = options or QuickOptions()
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(classes)
    extra_all = flipped if opts.use_flips else None
    assignment, k = stratified_folds(labels, opts.folds, opts.seed)
    oof_logits = np.zeros((len(labels), num_classes))
    oof_dist = np.zeros(len(labels))
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
        )
        oof_logits[test] = head.logits(features[test])
        oof_dist[test] = knn_distances(features[train], labels[train], features[test], opts.neighbours)
        if progress is not None:
            progress(fold + 1, k + 1)
    temperature = fit_temperature(oof_logits, labels)
    oof_probs = softmax(oof_logits, temperature)
    calibration = calibrate(
        oof_probs.max(axis=1),
        oof_dist,
        target_flag_rate=opts.target_flag_rate,
        temperature=temperature,
        k=opts.neighbours,
    )
    head = fit_head(features, labels, num_classes, opts.l2, opts.standardize, extra_all)
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
        "flips": opts.use_flips,
    }
    return QuickResult(
        head=head,
        temperature=temperature,
        calibration=calibration,
        oof_logits=oof_logits,
        oof_probs=oof_probs,
        oof_distances=oof_dist,
        folds=k,
        metrics=summary,
    )
