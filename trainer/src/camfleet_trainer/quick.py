"""The quick model: a linear head on frozen features, with out-of-fold checks and anomaly calibration.

Out-of-fold (OOF) predictions stand in for held-out in-distribution images: every training image is scored
by a head that never saw it, so temperature scaling, the anomaly threshold and the label-error ranking all
rest on honest numbers without setting images aside.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from camfleet_contract.anomaly import AnomalyCalibration, Statistic, calibrate, calibrate_combined, statistics
from camfleet_contract.runtime import softmax
from camfleet_trainer.embed import l2_normalize
from camfleet_trainer.head import DEFAULT_L2, MAX_ITER, LinearHead, fit_head
from camfleet_trainer.metrics import QuickMetrics, classification_metrics
from camfleet_trainer.oof import (
    fit_temperature,
    label_probabilities,
    likely_mislabelled,
    neighbour_evidence,
    stratified_folds,
)

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 5
DEFAULT_NEIGHBOURS = 5
DEFAULT_FLAG_RATE = 0.05
# The anomaly statistics combined (the larger of their percentiles among out-of-fold images): chosen by
# leave-two-classes-out on clothing train/ (bench/ood.py, docs/BENCHMARKS.md): the energy of the head's logits
# catches kinds near the known ones (dress + shorts left out: 0.25 vs 0.09 for the distance), the kNN distance
# kinds far from them (shoes + skirt: 0.68 vs 0.06 for the energy); the mean of the two percentiles lost both.
DEFAULT_ANOMALY: tuple[Statistic, ...] = ("energy", "distance")
DEFAULT_ANOMALY_COMBINE: Literal["mean", "max"] = "max"
# The label check's refit starts from the first fold heads, which are near its optimum: 10 LBFGS iterations rank
# as well as 50 from zeros (the same precision at k on seeds 0-2, bench/label_errors.py) in a third of the time.
REFIT_ITER = 10


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
    # Rank label errors by fold heads refitted without the likely mislabelled images (confident learning's count).
    refit_label_check: bool = True


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
    metrics: QuickMetrics


def anomaly_calibration(
    oof_logits: np.ndarray,
    unit: np.ndarray,
    oof_distances: np.ndarray,
    oof_scaled_energy: np.ndarray,
    head: LinearHead,
    temperature: float,
    opts: QuickOptions,
    none_on_top: np.ndarray | None = None,
) -> AnomalyCalibration:
    """The bundle's anomaly calibration from out-of-fold outputs of normal images: `opts.anomaly` combined, or the
    older method; `none_on_top` marks those whose top class is a none-of-the-above one (flagged anyway)."""
    if not opts.anomaly:
        probs = softmax(oof_logits, temperature)
        return calibrate(
            probs.max(axis=1),
            oof_distances,
            opts.target_flag_rate,
            temperature=temperature,
            k=opts.neighbours,
            flagged_anyway=none_on_top,
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
        flagged_anyway=none_on_top,
    )


@dataclass
class _OutOfFold:
    """What the fold heads say about the images they never saw."""

    logits: np.ndarray  # (N, C)
    mirror_logits: np.ndarray | None  # (N, C) of the mirror images, when there are any
    scaled_energy: np.ndarray  # (N,) SCALE-shaped energy (each fold head's own bias); zeros unless asked for
    assignment: np.ndarray  # fold per image
    folds: int
    heads: list[LinearHead]

    def both_views(self, temperature: float) -> np.ndarray:
        """Calibrated probabilities, averaged over the image and its mirror where there is one."""
        probs = softmax(self.logits, temperature)
        return probs if self.mirror_logits is None else (probs + softmax(self.mirror_logits, temperature)) / 2


def _out_of_fold(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    flipped: np.ndarray | None,
    opts: QuickOptions,
    folds: tuple[np.ndarray, int],
    on_fold: Callable[[], None],
    left_out: np.ndarray | None = None,
    start: list[LinearHead] | None = None,
) -> _OutOfFold:
    """One head per fold, each scoring the fold it did not see (and its mirror images); `left_out` images are
    trained on by no head, and `start` gives each fold's head a starting point (a refit)."""
    extra_all = flipped if opts.use_flips else None
    assignment, k = folds
    oof_logits = np.zeros((len(labels), num_classes))
    mirror_logits = np.zeros((len(labels), num_classes)) if flipped is not None else None
    shaped_energy = "scaled_energy" in opts.anomaly
    unit = l2_normalize(features) if shaped_energy else None  # a copy of every row: only when it is asked for
    scaled = np.zeros(len(labels))  # SCALE-shaped energy needs each fold head's own bias
    heads = []
    for fold in range(k):
        test = assignment == fold
        train = ~test if left_out is None else ~test & ~left_out
        head = fit_head(
            features[train],
            labels[train],
            num_classes,
            opts.l2,
            opts.standardize,
            None if extra_all is None else extra_all[train],
            opts.balanced,
            start=None if start is None else start[fold],
            max_iter=MAX_ITER if start is None else REFIT_ITER,
        )
        heads.append(head)
        oof_logits[test] = head.logits(features[test])
        if mirror_logits is not None and flipped is not None:
            mirror_logits[test] = head.logits(flipped[test])
        if unit is not None:
            shaped = AnomalyCalibration(method="confidence", head_bias=head.bias.tolist())
            scaled[test] = statistics(oof_logits[test], unit[test], None, shaped, ["scaled_energy"])["scaled_energy"]
        on_fold()
    return _OutOfFold(oof_logits, mirror_logits, scaled, assignment, k, heads)


def train_quick(
    features: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    flipped: np.ndarray | None = None,
    options: QuickOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
    groups: np.ndarray | None = None,
    none_classes: np.ndarray | None = None,
) -> QuickResult:
    """OOF logits + kNN distances → temperature → anomaly calibration; then the head on every image.

    The label-error ranking (`label_probs`) comes from the fold heads refitted without the images confident
    learning counts as likely mislabelled (`opts.refit_label_check`), so those do not pull the heads their way.

    `none_classes` (C,) bools marks none-of-the-above classes: trained on, but their images are not normal ones,
    so the anomaly references leave them out (the runtime flags a none class on top by itself).
    """
    opts = options or QuickOptions()
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(classes)
    folds = stratified_folds(labels, opts.folds, opts.seed, groups)
    total = (2 if opts.refit_label_check else 1) * folds[1] + 1  # fold heads, their refit, the final head
    done = 0

    def on_fold() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    oof = _out_of_fold(features, labels, num_classes, flipped, opts, folds, on_fold)
    neighbours = neighbour_evidence(features, labels, oof.assignment, num_classes, opts.neighbours)
    temperature = fit_temperature(oof.logits, labels)
    oof_probs = softmax(oof.logits, temperature)
    label_probs = label_probabilities(oof.both_views(temperature), neighbours.label_share, neighbours.label_k)
    suspects = likely_mislabelled(label_probs, labels)
    if opts.refit_label_check and suspects.any():
        # Confident learning's prune-and-refit: fold heads that never trained on the likely mislabelled images
        # judge every image again, starting from the first heads (bench/label_errors.py, docs/BENCHMARKS.md).
        refit = _out_of_fold(features, labels, num_classes, flipped, opts, folds, on_fold, suspects, oof.heads)
        label_probs = label_probabilities(refit.both_views(temperature), neighbours.label_share, neighbours.label_k)
    extra_all = flipped if opts.use_flips else None
    head = fit_head(features, labels, num_classes, opts.l2, opts.standardize, extra_all, opts.balanced)
    unit = l2_normalize(features)
    none = np.zeros(num_classes, dtype=bool) if none_classes is None else np.asarray(none_classes, dtype=bool)
    normal = ~none[labels]
    calibration = anomaly_calibration(
        oof.logits[normal],
        unit[normal],
        neighbours.oof_distances[normal],
        oof.scaled_energy[normal],
        head,
        temperature,
        opts,
        none[oof.logits[normal].argmax(axis=1)],
    )
    if progress is not None:
        progress(total, total)
    metrics = classification_metrics(labels, oof_probs.argmax(axis=1), classes)
    oof_nll = float(-np.log(np.clip(oof_probs[np.arange(len(labels)), labels], 1e-12, None)).mean())
    summary: QuickMetrics = {
        "mode": "quick",
        "images": int(len(labels)),
        "folds": oof.folds,
        "oof_accuracy": metrics.accuracy,
        "oof_balanced_accuracy": metrics.balanced_accuracy,
        "oof_nll": round(oof_nll, 4),
        "per_class": metrics.per_class_json(),
        "confusion": metrics.confusion,
        "temperature": round(temperature, 4),
        "anomaly_threshold": round(calibration.threshold, 4),
        "l2": opts.l2,
        "standardize": opts.standardize,
        "flips": extra_all is not None,
        "balanced": opts.balanced,
        "label_neighbours": neighbours.label_k,
        "likely_mislabelled": int(suspects.sum()),
    }
    return QuickResult(
        head=head,
        temperature=temperature,
        calibration=calibration,
        oof_logits=oof.logits,
        oof_probs=oof_probs,
        oof_distances=neighbours.oof_distances,
        label_probs=label_probs,
        folds=oof.folds,
        metrics=summary,
    )
