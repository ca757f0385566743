"""One training run, shared by the CLI and the hub worker: `train_quick_bundle` or `train_full_bundle`, each over
the shared steps (check the dataset, train, export + check + sign through `_export`) → a signed bundle."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from camfleet_contract.anomaly import AnomalyCalibration
from camfleet_contract.bundle import Manifest
from camfleet_contract.images import ImageError, Preprocessing, decode_image, preprocess_batch
from camfleet_contract.neighbours import NeighbourIndex
from camfleet_trainer.backbone import Backbone
from camfleet_trainer.data import LabeledSet, Sample, check_dataset
from camfleet_trainer.embed import FeatureCache, embed_samples
from camfleet_trainer.export import l2_index, write_bundle
from camfleet_trainer.full import FullOptions, FullResult, train_full
from camfleet_trainer.progress import EpochStats, Estimate, FullHooks
from camfleet_trainer.quantize import CALIBRATION_IMAGES, Int8Inputs
from camfleet_trainer.quick import LinearHead, QuickOptions, QuickResult, train_quick
from camfleet_trainer.schedule import sample_groups

log = logging.getLogger(__name__)

PARITY_IMAGES = 8
INT8_EVAL_IMAGES = 512  # quick mode judges INT8 on (a sample of) the training images: it has no held-out split
EVAL_BATCH = 32
Mode = Literal["quick", "full"]
MODES: tuple[Mode, ...] = ("quick", "full")

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
    def metrics(self) -> dict[str, Any]:
        """The training metrics of whichever mode ran (as in the manifest, plus the confusion matrix)."""
        result = self.full if self.full is not None else self.quick
        return result.metrics if result is not None else {}


def _noop(stage: str, progress: float, message: str) -> None:
    return None


def _check_images(data: LabeledSet, limit: int = PARITY_IMAGES) -> list[np.ndarray]:
    """A few decodable training images spread over the classes, for the ONNX-vs-torch check."""
    by_class: dict[int, list[int]] = {}
    for i, s in enumerate(data.samples):
        by_class.setdefault(s.label, []).append(i)
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


def _eval_batches(
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
            labels.append(s.label)
        if images:
            yield preprocess_batch(images, spec), np.asarray(labels, dtype=np.int64)


def _int8_inputs(train: LabeledSet, evaluation: Sequence[Sample], spec: Preprocessing, eval_set: str) -> Int8Inputs:
    """Calibration on training images spread over the classes; judged on `evaluation` (labelled)."""
    calibration = preprocess_batch(_check_images(train, CALIBRATION_IMAGES), spec)
    return Int8Inputs(calibration, lambda: _eval_batches(evaluation, spec), eval_set)


def _spread(samples: Sequence[Sample], limit: int, seed: int = 0) -> list[Sample]:
    """At most `limit` samples, drawn at random (fixed seed) when there are more."""
    if len(samples) <= limit:
        return list(samples)
    keep = np.random.default_rng(seed).choice(len(samples), limit, replace=False)
    return [samples[i] for i in sorted(keep.tolist())]


def label_error_ranking(data: LabeledSet, result: QuickResult) -> list[dict[str, Any]]:
    """Images ordered by how little the out-of-fold evidence believes their label (likely mislabels first).

    `p_label` is the combined belief of the OOF model and the image's neighbours (quick.label_probabilities);
    `p_model` is the OOF model's calibrated probability of the label on its own.
    """
    labels = np.array([s.label for s in data.samples])
    rows_idx = np.arange(len(labels))
    p_label = result.label_probs[rows_idx, labels]
    p_model = result.oof_probs[rows_idx, labels]
    predicted = result.label_probs.argmax(axis=1)
    rows = []
    for i in np.argsort(p_label, kind="stable"):
        s = data.samples[int(i)]
        rows.append(
            {
                "name": s.name,
                "sha256": s.sha256,
                "label": data.classes[s.label],
                "predicted": data.classes[int(predicted[i])],
                "p_label": round(float(p_label[i]), 6),
                "p_predicted": round(float(result.label_probs[i, predicted[i]]), 4),
                "p_model": round(float(p_model[i]), 4),
                "distance": round(float(result.oof_distances[i]), 4),
            }
        )
    return rows


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
class QuickBundleOptions:
    """Quick mode: a linear head on cached frozen embeddings; `known` are the hub's unit vectors by sha256 (used
    where they match the backbone); INT8 is off unless asked for (no held-out split to judge it on)."""

    options: QuickOptions = field(default_factory=QuickOptions)
    cache_dir: Path | None = None
    known: Mapping[str, np.ndarray] | None = None
    int8: bool = False
    show_progress: bool = False


@dataclass(frozen=True)
class FullBundleOptions:
    """Full mode: the whole model fine-tuned; progress through `hooks`; INT8 on by default (judged on the
    validation split, kept only when it loses under a point)."""

    options: FullOptions = field(default_factory=FullOptions)
    hooks: FullHooks = field(default_factory=FullHooks)
    int8: bool = True


def train_quick_bundle(
    data: LabeledSet, backbone: Backbone, target: BundleTarget, quick: QuickBundleOptions | None = None
) -> TrainOutcome:
    """Embed (cached) → quick head with out-of-fold calibration → export a signed, export-checked bundle."""
    run = quick or QuickBundleOptions()
    check_dataset(data)
    stage = target.on_stage
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    total = len(data.samples)
    stage("embed", 0.05, f"embedding {total} images with {backbone.name}")
    cache = FeatureCache(run.cache_dir, backbone.cache_key) if run.cache_dir is not None else None

    def embed_progress(done: int, count: int) -> None:
        stage("embed", 0.05 + 0.65 * done / max(count, 1), f"embedded {done}/{count} images")

    emb = embed_samples(
        backbone,
        data.samples,
        cache,
        target.device,
        progress=embed_progress,
        show_progress=run.show_progress,
        known=run.known,
    )
    if emb.reused:
        stage("embed", 0.7, f"{emb.reused} of {total} embeddings reused from the hub, {emb.computed} computed")
    usable = data.subset(emb.kept.tolist())
    check_dataset(usable, where="usable images")
    seconds["embed"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    stage("train", 0.7, f"fitting the quick model on {len(usable.samples)} images")
    labels = np.array([s.label for s in usable.samples], dtype=np.int64)

    def train_progress(done: int, count: int) -> None:
        stage("train", 0.7 + 0.15 * done / max(count, 1), f"fitted {done}/{count} heads")

    groups = sample_groups([s.cluster for s in usable.samples])  # near-duplicates share a fold
    quick_result = train_quick(emb.features, labels, usable.classes, emb.flipped, run.options, train_progress, groups)
    seconds["train"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    stage("export", 0.85, "exporting ONNX and checking it against torch")
    report = {
        "classes": usable.classes,
        "counts": usable.counts(),
        "skipped": [{"name": n, "reason": r} for n, r in emb.skipped],
        "metrics": quick_result.metrics,
        "label_errors": label_error_ranking(usable, quick_result),
    }
    metrics = _manifest_metrics(quick_result.metrics, usable, emb.skipped, ("confusion",))
    metrics["embeddings_reused"] = emb.reused  # from the hub (computed at import), not run again here
    int8 = (
        _int8_inputs(
            usable,
            _spread(usable.samples, INT8_EVAL_IMAGES),
            backbone.preprocessing,
            "training images (quick mode has no held-out split)",
        )
        if run.int8
        else None
    )
    index = l2_index(emb.features, labels)
    manifest = _export(
        target, backbone, usable, quick_result.calibration, quick_result.head, index, metrics, report, int8
    )
    seconds["export"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    stage("done", 0.98, f"bundle written: OOF accuracy {quick_result.metrics['oof_accuracy']:.3f}")
    return TrainOutcome(manifest, target.out_dir, usable.classes, usable.counts(), emb.skipped, quick_result, seconds)


def _manifest_metrics(
    metrics: Mapping[str, Any], usable: LabeledSet, skipped: Sequence[object], leave_out: tuple[str, ...]
) -> dict[str, Any]:
    """The manifest's figures: the run's metrics minus the bulky ones, plus the counts and skipped images."""
    out = {k: v for k, v in metrics.items() if k not in leave_out}
    out["counts"] = usable.counts()
    out["skipped_images"] = len(skipped)
    return out


def _export(
    target: BundleTarget,
    backbone: Backbone,
    usable: LabeledSet,
    calibration: AnomalyCalibration,
    head: LinearHead | torch.nn.Linear,
    index: NeighbourIndex,
    metrics: dict[str, Any],
    report: dict[str, Any],
    int8: Int8Inputs | None,
) -> Manifest:
    """The shared last step: write, check (ONNX against torch on a few training images) and sign the bundle."""
    return write_bundle(
        target.out_dir,
        backbone,
        usable.classes,
        calibration,
        target.seed_hex,
        _check_images(usable),
        head=head,
        index=index,
        classifier=target.classifier,
        version=target.version,
        metrics=metrics,
        report=report,
        overwrite=target.overwrite,
        int8=int8,
    )


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


def _misclassified(result: FullResult) -> list[dict[str, Any]]:
    """The validation images the calibrated model gets wrong, most confident mistake first."""
    rows = []
    predicted = result.val_probs.argmax(axis=1)
    for j in np.argsort(-result.val_probs.max(axis=1), kind="stable"):
        s = result.usable.samples[int(result.val_indices[j])]
        if predicted[j] != s.label:
            rows.append(
                {
                    "name": s.name,
                    "sha256": s.sha256,
                    "label": result.classes[s.label],
                    "predicted": result.classes[int(predicted[j])],
                    "probability": round(float(result.val_probs[j, predicted[j]]), 4),
                }
            )
    return rows


def _full_label_errors(result: FullResult) -> list[dict[str, Any]]:
    """The label-error ranking of a full run: quick mode's out-of-fold heads and neighbours, on the fine-tuned
    model's embeddings of every image (seconds, where refitting the whole model per fold would take hours)."""
    usable = result.usable
    labels = np.array([s.label for s in usable.samples], dtype=np.int64)
    groups = sample_groups([s.cluster for s in usable.samples])
    return label_error_ranking(usable, train_quick(result.embeddings, labels, usable.classes, groups=groups))


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
    train_part = usable.subset(is_train.tolist())
    val_samples = [usable.samples[int(i)] for i in result.val_indices]
    metrics = _manifest_metrics(result.metrics, usable, result.skipped, ("confusion", "history"))
    report = {
        "mode": "full",
        "classes": usable.classes,
        "counts": usable.counts(),
        "split": {"train": train_part.counts(), "validation": usable.subset((~is_train).tolist()).counts()},
        "skipped": [{"name": n, "reason": r} for n, r in result.skipped],
        "metrics": result.metrics,
        "history": [
            h.hub_metrics().model_dump() | {"train_images_per_s": round(h.train_images_per_s, 2)}
            for h in result.history
        ],
        "estimate": {"text": result.estimate.text(), "total_s": round(result.estimate.total_s, 1)},
        "misclassified": _misclassified(result),
        "label_errors": _full_label_errors(result),
    }
    spec = result.backbone.preprocessing
    int8 = _int8_inputs(train_part, val_samples, spec, "validation split") if run.int8 else None
    manifest = _export(
        target, result.backbone, usable, result.calibration, result.head, result.index, metrics, report, int8
    )
    seconds["export"] = time.perf_counter() - t1
    seconds["total"] = time.perf_counter() - t0
    stage("done", 0.98, f"bundle written: validation accuracy {result.metrics['val_accuracy']:.3f}")
    return TrainOutcome(manifest, out_dir, usable.classes, usable.counts(), result.skipped, None, seconds, result)


def _int8_line(manifest: Manifest) -> str | None:
    info = manifest.metrics.get("int8")
    if not isinstance(info, dict):
        return None
    if "error" in info:
        return f"int8       not included: {info['error']}"
    verdict = "included" if info.get("included") else f"left out (loses {info['max_loss_points']} point or more)"
    return (
        f"int8       {verdict}: accuracy {info['int8_accuracy']:.3f} vs {info['fp32_accuracy']:.3f} FP32 "
        f"({info['loss_points']:.2f} points lost, agreement {info['agreement']:.3f}) on {info['images']} images "
        f"({info['eval_set']}); batch 1 {info['int8_ms_batch1']:.1f} ms vs {info['fp32_ms_batch1']:.1f} ms"
    )


def format_report(outcome: TrainOutcome) -> str:
    """The human summary the CLI prints after training."""
    if outcome.full is not None:
        return _format_full(outcome, outcome.full)
    assert outcome.quick is not None
    m = outcome.quick.metrics
    man = outcome.manifest
    lines = [
        f"bundle     {outcome.bundle_dir}  (classifier {man.classifier}, version {man.version})",
        f"backbone   {outcome.manifest.backbone}  embedding {outcome.manifest.embedding_dim}-d",
        f"images     {sum(outcome.counts.values())} in {len(outcome.classes)} classes"
        + (f", {len(outcome.skipped)} skipped (undecodable)" if outcome.skipped else ""),
        f"OOF        accuracy {m['oof_accuracy']:.3f}  balanced {m['oof_balanced_accuracy']:.3f}  "
        f"({m['folds']}-fold)  temperature {m['temperature']:.3f}",
        f"anomaly    threshold {outcome.quick.calibration.threshold:.3f} "
        f"(flags ~{outcome.quick.calibration.target_flag_rate:.0%} of held-out normal images)",
        "",
        f"{'class':<20} {'images':>6} {'precision':>9} {'recall':>7}",
    ]
    for name in outcome.classes:
        pc = m["per_class"][name]
        lines.append(f"{name:<20} {outcome.counts[name]:>6} {pc['precision']:>9.3f} {pc['recall']:>7.3f}")
    for name, reason in outcome.skipped[:10]:
        lines.append(f"skipped {name}: {reason}")
    int8_line = _int8_line(man)
    if int8_line:
        lines.append(int8_line)
    s = outcome.seconds
    lines.append("")
    lines.append(
        f"time       {s.get('total', 0):.1f}s (embed {s.get('embed', 0):.1f}s, train {s.get('train', 0):.1f}s, "
        f"export {s.get('export', 0):.1f}s)"
    )
    return "\n".join(lines)


def _format_full(outcome: TrainOutcome, result: FullResult) -> str:
    """The full mode's summary: the split, the epochs, validation metrics, calibration, INT8, time."""
    m = result.metrics
    man = outcome.manifest
    split = f"{m['train_images']} train / {m['val_images']} validation"
    stop = f", stopped early after {m['epochs_run']}" if m["stopped_early"] else ""
    lines = [
        f"bundle     {outcome.bundle_dir}  (classifier {man.classifier}, version {man.version})",
        f"backbone   {man.backbone} fine-tuned at {m['image_size']} px on {m['device']}, "
        f"embedding {man.embedding_dim}-d",
        f"images     {sum(outcome.counts.values())} in {len(outcome.classes)} classes ({split})"
        + (f", {len(outcome.skipped)} skipped (undecodable)" if outcome.skipped else ""),
        f"training   {m['epochs_run']}/{m['epochs_max']} epochs{stop}, best epoch {m['best_epoch']}; batch "
        f"{m['batch_size']}, {m['augment']} augmentation, {'class-balanced' if m['balanced_sampling'] else 'plain'} "
        f"sampling, {m['train_images_per_s']:.1f} training images/s",
        f"validation accuracy {m['val_accuracy']:.3f}  balanced {m['val_balanced_accuracy']:.3f}  "
        f"NLL {m['val_nll']:.3f}  temperature {m['temperature']:.3f}",
        f"anomaly    threshold {result.calibration.threshold:.3f} "
        f"(flags ~{result.calibration.target_flag_rate:.0%} of validation images)",
    ]
    int8_line = _int8_line(man)
    if int8_line:
        lines.append(int8_line)
    lines += ["", f"{'class':<20} {'images':>6} {'precision':>9} {'recall':>7}   (validation split)"]
    for name in outcome.classes:
        pc = m["per_class"][name]
        lines.append(f"{name:<20} {outcome.counts[name]:>6} {pc['precision']:>9.3f} {pc['recall']:>7.3f}")
    for name, reason in outcome.skipped[:10]:
        lines.append(f"skipped {name}: {reason}")
    s = outcome.seconds
    lines += [
        "",
        f"time       {s.get('total', 0):.1f}s (training {s.get('train', 0):.1f}s, export {s.get('export', 0):.1f}s; "
        f"estimated {result.estimate.total_s:.0f}s)",
    ]
    return "\n".join(lines)
