"""Quick mode end to end: embed (cached) → quick head with out-of-fold calibration → a signed bundle."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from camfleet_trainer.backbone import Backbone
from camfleet_trainer.data import LabeledSet, Sample, check_dataset
from camfleet_trainer.embed import Embedded, FeatureCache, embed_samples
from camfleet_trainer.export import l2_index
from camfleet_trainer.label_errors import label_error_ranking
from camfleet_trainer.pipeline import (
    BundleTarget,
    Trained,
    TrainOutcome,
    export_bundle,
    int8_inputs,
    manifest_metrics,
)
from camfleet_trainer.quick import QuickOptions, QuickResult, train_quick
from camfleet_trainer.schedule import sample_groups

INT8_EVAL_IMAGES = 512  # quick mode judges INT8 on (a sample of) the training images: it has no held-out split


@dataclass(frozen=True)
class QuickBundleOptions:
    """Quick mode: a linear head on cached frozen embeddings; `known` are the hub's unit vectors by sha256 (used
    where they match the backbone); INT8 is off unless asked for (no held-out split to judge it on)."""

    options: QuickOptions = field(default_factory=QuickOptions)
    cache_dir: Path | None = None
    known: Mapping[str, np.ndarray] | None = None
    int8: bool = False
    show_progress: bool = False


def _spread(samples: Sequence[Sample], limit: int, seed: int = 0) -> list[Sample]:
    """At most `limit` samples, drawn at random (fixed seed) when there are more."""
    if len(samples) <= limit:
        return list(samples)
    keep = np.random.default_rng(seed).choice(len(samples), limit, replace=False)
    return [samples[i] for i in sorted(keep.tolist())]


def _embed(data: LabeledSet, backbone: Backbone, target: BundleTarget, run: QuickBundleOptions) -> Embedded:
    """Every image's features: the trainer's cache, then the hub's vectors, then the backbone."""
    stage = target.on_stage
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
    return emb


def _trained(usable: LabeledSet, emb: Embedded, labels: np.ndarray, result: QuickResult) -> Trained:
    """The head, its calibration, the neighbour index, the manifest's figures and the report."""
    report: dict[str, object] = {
        "classes": usable.classes,
        "counts": usable.counts(),
        "skipped": [{"name": n, "reason": r} for n, r in emb.skipped],
        "metrics": result.metrics,
        "label_errors": [asdict(row) for row in label_error_ranking(usable, result)],
    }
    metrics = manifest_metrics(result.metrics, usable, emb.skipped, ("confusion",))
    metrics["embeddings_reused"] = emb.reused  # from the hub (computed at import), not run again here
    index = l2_index(emb.features, labels)
    return Trained(usable, result.calibration, result.head, index, metrics, report)


def train_quick_bundle(
    data: LabeledSet, backbone: Backbone, target: BundleTarget, quick: QuickBundleOptions | None = None
) -> TrainOutcome:
    """Embed (cached) → quick head with out-of-fold calibration → export a signed, export-checked bundle."""
    run = quick or QuickBundleOptions()
    check_dataset(data)
    stage = target.on_stage
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    emb = _embed(data, backbone, target, run)
    usable = data.subset(emb.kept.tolist())
    check_dataset(usable, where="usable images")
    seconds["embed"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    stage("train", 0.7, f"fitting the quick model on {len(usable.samples)} images")
    labels = np.array([s.class_index for s in usable.samples], dtype=np.int64)

    def train_progress(done: int, count: int) -> None:
        stage("train", 0.7 + 0.15 * done / max(count, 1), f"fitted {done}/{count} heads")

    groups = sample_groups([s.cluster for s in usable.samples])  # near-duplicates share a fold
    result = train_quick(
        emb.features, labels, usable.classes, emb.flipped, run.options, train_progress, groups, usable.none_mask()
    )
    seconds["train"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    stage("export", 0.85, "exporting ONNX and checking it against torch")
    trained = _trained(usable, emb, labels, result)
    int8 = None
    if run.int8:
        eval_set = "training images (quick mode has no held-out split)"
        int8 = int8_inputs(usable, _spread(usable.samples, INT8_EVAL_IMAGES), backbone.preprocessing, eval_set)
    manifest = export_bundle(target, backbone, trained, int8)
    seconds["export"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    stage("done", 0.98, f"bundle written: OOF accuracy {result.metrics['oof_accuracy']:.3f}")
    return TrainOutcome(manifest, target.out_dir, usable.classes, usable.counts(), emb.skipped, result, seconds)
