"""What both training modes share: where the bundle goes (`BundleTarget`), what a run produced (`TrainOutcome`),
and the last step, export + check + sign (`export_bundle`). Each mode is one function over these:
`quick_bundle.train_quick_bundle` and `full_bundle.train_full_bundle`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from camfleet_contract.anomaly import AnomalyCalibration
from camfleet_contract.bundle import Manifest
from camfleet_contract.images import ImageError, Preprocessing, decode_image, preprocess_batch
from camfleet_contract.neighbours import NeighbourIndex
from camfleet_trainer.backbone import Backbone
from camfleet_trainer.data import LabeledSet, Sample
from camfleet_trainer.export import write_bundle
from camfleet_trainer.full import FullResult
from camfleet_trainer.head import LinearHead
from camfleet_trainer.metrics import FullMetrics, QuickMetrics
from camfleet_trainer.quantize import CALIBRATION_IMAGES, Int8Inputs
from camfleet_trainer.quick import QuickResult

log = logging.getLogger(__name__)

PARITY_IMAGES = 8
EVAL_BATCH = 32
Mode = Literal["quick", "full"]
MODES: tuple[Mode, ...] = ("quick", "full")
# The manifest's `metrics` and the bundle's report: JSON objects, written once and read by the hub.
JsonObject = dict[str, object]

# on_stage(stage, progress in [0, 1], message); it may raise to abort the run (a cancelled job).
StageFn = Callable[[str, float, str], None]


@dataclass
class TrainOutcome:
    """What a run produced, for the CLI's report and the worker's logs."""

    manifest: Manifest
    bundle_dir: Path
    classes: list[str]
    counts: dict[str, int]
    skipped: list[tuple[str, str]]
    quick: QuickResult | None  # set in quick mode
    seconds: dict[str, float] = field(default_factory=dict)
    full: FullResult | None = None  # set in full mode

    @property
    def mode(self) -> Mode:
        return "full" if self.full is not None else "quick"

    @property
    def metrics(self) -> QuickMetrics | FullMetrics | None:
        """The training metrics of whichever mode ran (as in the manifest, plus the confusion matrix)."""
        result = self.full if self.full is not None else self.quick
        return result.metrics if result is not None else None

    @property
    def accuracy(self) -> float | None:
        """The run's headline accuracy: on the validation split (full) or out-of-fold (quick)."""
        if self.full is not None:
            return self.full.metrics["val_accuracy"]
        return self.quick.metrics["oof_accuracy"] if self.quick is not None else None


def _noop(stage: str, progress: float, message: str) -> None:
    return None


@dataclass(frozen=True)
class BundleTarget:
    """What both modes share: where the signed bundle goes, under which name, and where progress is reported."""

    out_dir: Path
    seed_hex: str  # the trainer's signing key
    classifier: str = "classifier"
    version: str | None = None
    overwrite: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    on_stage: StageFn = _noop  # (stage, progress in [0, 1], message); may raise to abort (a cancelled job)


@dataclass(frozen=True)
class Trained:
    """What the mode trained, for the shared export step."""

    usable: LabeledSet
    calibration: AnomalyCalibration
    head: LinearHead | torch.nn.Linear
    index: NeighbourIndex
    metrics: JsonObject
    report: JsonObject


def check_images(data: LabeledSet, limit: int = PARITY_IMAGES) -> list[np.ndarray]:
    """A few decodable training images spread over the classes, for the ONNX-vs-torch check."""
    by_class: dict[int, list[int]] = {}
    for i, s in enumerate(data.samples):
        by_class.setdefault(s.class_index, []).append(i)
    order = [idxs[j] for j in range(max(map(len, by_class.values()))) for idxs in by_class.values() if j < len(idxs)]
    images: list[np.ndarray] = []
    for i in order:
        try:
            images.append(decode_image(data.samples[i].read()))
        except (ImageError, OSError):
            continue
        if len(images) >= limit:
            break
    return images


def eval_batches(
    samples: Sequence[Sample], spec: Preprocessing, batch: int = EVAL_BATCH
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Preprocessed batches (the contract's preprocessing) with their labels; undecodable images left out."""
    for start in range(0, len(samples), batch):
        images, labels = [], []
        for s in samples[start : start + batch]:
            try:
                images.append(decode_image(s.read()))
            except (ImageError, OSError):
                continue
            labels.append(s.class_index)
        if images:
            yield preprocess_batch(images, spec), np.asarray(labels, dtype=np.int64)


def int8_inputs(train: LabeledSet, evaluation: Sequence[Sample], spec: Preprocessing, eval_set: str) -> Int8Inputs:
    """Calibration on training images spread over the classes; judged on `evaluation` (labelled)."""
    calibration = preprocess_batch(check_images(train, CALIBRATION_IMAGES), spec)
    return Int8Inputs(calibration, lambda: eval_batches(evaluation, spec), eval_set)


def manifest_metrics(
    metrics: Mapping[str, object], usable: LabeledSet, skipped: Sequence[object], leave_out: tuple[str, ...]
) -> JsonObject:
    """The manifest's figures: the run's metrics minus the bulky ones, plus the counts and skipped images."""
    out = {k: v for k, v in metrics.items() if k not in leave_out}
    out["counts"] = usable.counts()
    out["skipped_images"] = len(skipped)
    return out


def export_bundle(target: BundleTarget, backbone: Backbone, trained: Trained, int8: Int8Inputs | None) -> Manifest:
    """The shared last step: write, check (ONNX against torch on a few training images) and sign the bundle."""
    return write_bundle(
        target.out_dir,
        backbone,
        trained.usable.classes,
        trained.calibration,
        target.seed_hex,
        check_images(trained.usable),
        head=trained.head,
        index=trained.index,
        classifier=target.classifier,
        version=target.version,
        metrics=trained.metrics,
        report=trained.report,
        overwrite=target.overwrite,
        int8=int8,
        none_classes=trained.usable.none_classes,
    )
