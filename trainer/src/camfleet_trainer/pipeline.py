"""One training run, shared by the CLI and the hub worker: embed → quick model → export → signed bundle."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camfleet_contract.bundle import Manifest
from camfleet_contract.images import ImageError, decode_image
from camfleet_trainer.backbone import Backbone
from camfleet_trainer.data import LabeledSet, check_dataset
from camfleet_trainer.embed import FeatureCache, embed_samples
from camfleet_trainer.export import l2_index, write_bundle
from camfleet_trainer.quick import QuickOptions, QuickResult, train_quick

log = logging.getLogger(__name__)

PARITY_IMAGES = 8

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
    quick: QuickResult
    seconds: dict[str, float] = field(default_factory=dict)


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


def label_error_ranking(data: LabeledSet, result: QuickResult) -> list[dict[str, Any]]:
    """Images ordered by how little the out-of-fold model believes their label (likely mislabels first)."""
    labels = np.array([s.label for s in data.samples])
    p_label = result.oof_probs[np.arange(len(labels)), labels]
    predicted = result.oof_probs.argmax(axis=1)
    rows = []
    for i in np.argsort(p_label, kind="stable"):
        s = data.samples[int(i)]
        rows.append(
            {
                "name": s.name,
                "sha256": s.sha256,
                "label": data.classes[s.label],
                "predicted": data.classes[int(predicted[i])],
                "p_label": round(float(p_label[i]), 4),
                "p_predicted": round(float(result.oof_probs[i, predicted[i]]), 4),
                "distance": round(float(result.oof_distances[i]), 4),
            }
        )
    return rows


def train_bundle(
    data: LabeledSet,
    out_dir: str | Path,
    backbone: Backbone,
    seed_hex: str,
    cache_dir: str | Path | None = None,
    device: torch.device | None = None,
    classifier: str = "classifier",
    version: str | None = None,
    options: QuickOptions | None = None,
    on_stage: StageFn | None = None,
    show_progress: bool = False,
    overwrite: bool = False,
) -> TrainOutcome:
    """Train the quick model on `data` and write a signed, export-checked bundle to `out_dir`."""
    stage = on_stage or _noop
    device = device or torch.device("cpu")
    seconds: dict[str, float] = {}
    check_dataset(data)

    t0 = time.perf_counter()
    total = len(data.samples)
    stage("embed", 0.05, f"embedding {total} images with {backbone.name}")
    cache = FeatureCache(cache_dir, backbone.cache_key) if cache_dir is not None else None

    def embed_progress(done: int, count: int) -> None:
        stage("embed", 0.05 + 0.65 * done / max(count, 1), f"embedded {done}/{count} images")

    emb = embed_samples(backbone, data.samples, cache, device, progress=embed_progress, show_progress=show_progress)
    usable = data.subset(emb.kept.tolist())
    check_dataset(usable, where="usable images")
    seconds["embed"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    stage("train", 0.7, f"fitting the quick model on {len(usable.samples)} images")
    labels = np.array([s.label for s in usable.samples], dtype=np.int64)

    def train_progress(done: int, count: int) -> None:
        stage("train", 0.7 + 0.15 * done / max(count, 1), f"fitted {done}/{count} heads")

    quick = train_quick(emb.features, labels, usable.classes, emb.flipped, options, train_progress)
    seconds["train"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    stage("export", 0.85, "exporting ONNX and checking it against torch")
    report = {
        "classes": usable.classes,
        "counts": usable.counts(),
        "skipped": [{"name": n, "reason": r} for n, r in emb.skipped],
        "metrics": quick.metrics,
        "label_errors": label_error_ranking(usable, quick),
    }
    metrics = {k: v for k, v in quick.metrics.items() if k != "confusion"}
    metrics["counts"] = usable.counts()
    metrics["skipped_images"] = len(emb.skipped)
    manifest = write_bundle(
        out_dir,
        backbone,
        usable.classes,
        quick.calibration,
        seed_hex,
        _check_images(usable),
        head=quick.head,
        index=l2_index(emb.features, labels),
        classifier=classifier,
        version=version,
        metrics=metrics,
        report=report,
        overwrite=overwrite,
    )
    seconds["export"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    stage("done", 0.98, f"bundle written: OOF accuracy {quick.metrics['oof_accuracy']:.3f}")
    return TrainOutcome(
        manifest=manifest,
        bundle_dir=Path(out_dir),
        classes=usable.classes,
        counts=usable.counts(),
        skipped=emb.skipped,
        quick=quick,
        seconds=seconds,
    )


def format_report(outcome: TrainOutcome) -> str:
    """The human summary the CLI prints after training."""
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
    s = outcome.seconds
    lines.append("")
    lines.append(
        f"time       {s.get('total', 0):.1f}s (embed {s.get('embed', 0):.1f}s, train {s.get('train', 0):.1f}s, "
        f"export {s.get('export', 0):.1f}s)"
    )
    return "\n".join(lines)
