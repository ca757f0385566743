"""Full mode end to end: fine-tune → calibrate on the validation split → a signed bundle (+ INT8 judged on the
validation split)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from camfleet_trainer.backbone import Backbone
from camfleet_trainer.data import LabeledSet, check_dataset
from camfleet_trainer.full import FullOptions, FullResult, train_full
from camfleet_trainer.label_errors import full_label_errors, misclassified
from camfleet_trainer.pipeline import (
    BundleTarget,
    JsonObject,
    StageFn,
    Trained,
    TrainOutcome,
    export_bundle,
    int8_inputs,
    manifest_metrics,
)
from camfleet_trainer.progress import EpochStats, Estimate, FullHooks


@dataclass(frozen=True)
class FullBundleOptions:
    """Full mode: the whole model fine-tuned; progress through `hooks`; INT8 on by default (judged on the
    validation split, kept only when it loses under a point)."""

    options: FullOptions = field(default_factory=FullOptions)
    hooks: FullHooks = field(default_factory=FullHooks)
    int8: bool = True


def _progress_hooks(user: FullHooks, stage: StageFn, epochs: int) -> FullHooks:
    """The caller's hooks plus stage reports: scan/estimate 0.00-0.08, epochs 0.08-0.88, the rest after."""
    last: list[EpochStats] = []

    def on_stage(name: str, fraction: float, message: str) -> None:
        stage(name, 0.88 + 0.04 * fraction if name == "embed" else 0.08 * fraction, message)
        if user.stage is not None:
            user.stage(name, fraction, message)

    def on_estimate(e: Estimate) -> None:
        stage("estimate", 0.08, e.text())
        if user.estimate is not None:
            user.estimate(e)

    def on_batch(epoch: int, done: int, total: int, loss: float) -> None:
        before = f" · last val acc {last[-1].val_acc:.3f}" if last else ""
        message = f"epoch {epoch}/{epochs} batch {done}/{total}{before}"
        stage("train", 0.08 + 0.8 * (epoch - 1 + done / total) / epochs, message)
        if user.batch is not None:
            user.batch(epoch, done, total, loss)

    def on_epoch(stats: EpochStats) -> None:
        last.append(stats)
        stage(
            "train",
            0.08 + 0.8 * stats.epoch / epochs,
            f"epoch {stats.epoch}/{epochs}: loss {stats.loss:.3f}, train acc {stats.train_acc:.3f}, "
            f"val acc {stats.val_acc:.3f}, {stats.seconds:.0f} s",
        )
        if user.epoch is not None:
            user.epoch(stats)

    return FullHooks(estimate=on_estimate, batch=on_batch, epoch=on_epoch, stage=on_stage)


def _report(result: FullResult, is_train: np.ndarray) -> JsonObject:
    """The bundle's report of a full run: the split, the epochs, the estimate and the two image lists."""
    usable = result.usable
    return {
        "mode": "full",
        "classes": usable.classes,
        "counts": usable.counts(),
        "split": {
            "train": usable.subset(is_train.tolist()).counts(),
            "validation": usable.subset((~is_train).tolist()).counts(),
        },
        "skipped": [{"name": n, "reason": r} for n, r in result.skipped],
        "metrics": result.metrics,
        "history": [
            h.hub_metrics().model_dump() | {"train_images_per_s": round(h.train_images_per_s, 2)}
            for h in result.history
        ],
        "estimate": {"text": result.estimate.text(), "total_s": round(result.estimate.total_s, 1)},
        "misclassified": [asdict(row) for row in misclassified(result)],
        "label_errors": [asdict(row) for row in full_label_errors(result)],
    }


def train_full_bundle(
    data: LabeledSet, backbone: Backbone, target: BundleTarget, full: FullBundleOptions | None = None
) -> TrainOutcome:
    """Fine-tune → calibrate on the validation split → export (+ INT8 judged on the validation split)."""
    run = full or FullBundleOptions()
    check_dataset(data)
    out_dir, stage = target.out_dir, target.on_stage
    if not target.overwrite and out_dir.exists() and any(out_dir.iterdir()):  # fail before minutes of work
        raise FileExistsError(f"out: {out_dir} exists and is not empty (use --force to replace it)")
    t0 = time.perf_counter()
    hooks = _progress_hooks(run.hooks, stage, run.options.epochs)
    result = train_full(data, backbone, target.device, run.options, hooks)
    seconds = {"train": time.perf_counter() - t0}
    t1 = time.perf_counter()
    stage("export", 0.92, "exporting ONNX and checking it against torch")
    usable = result.usable
    is_train = np.zeros(len(usable.samples), dtype=bool)
    is_train[result.train_indices] = True
    metrics = manifest_metrics(result.metrics, usable, result.skipped, ("confusion", "history"))
    trained = Trained(usable, result.calibration, result.head, result.index, metrics, _report(result, is_train))
    int8 = None
    if run.int8:
        val_samples = [usable.samples[int(i)] for i in result.val_indices]
        train_part = usable.subset(is_train.tolist())
        int8 = int8_inputs(train_part, val_samples, result.backbone.preprocessing, "validation split")
    manifest = export_bundle(target, result.backbone, trained, int8)
    seconds["export"] = time.perf_counter() - t1
    seconds["total"] = time.perf_counter() - t0
    stage("done", 0.98, f"bundle written: validation accuracy {result.metrics['val_accuracy']:.3f}")
    return TrainOutcome(manifest, out_dir, usable.classes, usable.counts(), result.skipped, None, seconds, result)
