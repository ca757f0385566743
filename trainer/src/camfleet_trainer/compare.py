"""Model comparison: for each backbone, the quick model's accuracy and speed as FP32 and INT8 ONNX on this machine.

A name joined with "+" ("lite0+lite1+lite2") is a stack, as quick mode ships it: the members on one input with
the quick view; the CLI's default list ends with the stack quick mode trains, so its row sits beside the singles.

The speed/accuracy trade-off a site faces when it picks a backbone, measured on its own images: every row is
the exported ONNX model (backbone + quick head, static padding) run by ONNX Runtime on the CPU, as an agent
runs it, judged on images the head never saw.

    >>> cmp = compare_backbones(load_folder("data/"), ["tf_efficientnet_lite0"], cache_dir=Path("var/cache"))
    >>> print(render_table(cmp))
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from camfleet_contract.bundle import Precision
from camfleet_contract.images import decode_image, preprocess_batch
from camfleet_contract.rest import ComparisonRow, ModelComparison, SkippedBackbone
from camfleet_contract.runtime import INPUT, OUTPUTS
from camfleet_trainer.backbone import Backbone, build_backbone
from camfleet_trainer.config import DEFAULT_QUICK_POOLING, DEFAULT_QUICK_VIEW
from camfleet_trainer.data import LabeledSet, Sample
from camfleet_trainer.embed import FeatureCache, embed_samples
from camfleet_trainer.errors import DatasetError
from camfleet_trainer.export import BundleModel, export_onnx, static_padding
from camfleet_trainer.head import fit_head
from camfleet_trainer.oof import stratified_folds
from camfleet_trainer.quantize import quantize_int8
from camfleet_trainer.quick import QuickOptions
from camfleet_trainer.stack import SEPARATOR, backbone_name, build_quick_backbone, member_names

log = logging.getLogger(__name__)

DEFAULT_EVAL_IMAGES = 200  # held-out images run through ORT per model: enough for ±3 points, bounded in time
SPEED_RUNS = 20  # timed batch-1 calls per model, after 3 warm-up calls
INT8_CALIBRATION = 64

# build(name) -> Backbone; tests pass a builder for a local checkpoint.
BackboneBuilder = Callable[[str], Backbone]


def build_candidate(name: str) -> Backbone:
    """One backbone ("lite1" or a timm name), or a stack ("lite0+lite2") on one input as quick mode ships it."""
    if SEPARATOR in name:
        return build_quick_backbone(member_names(name), DEFAULT_QUICK_VIEW, DEFAULT_QUICK_POOLING)
    return build_backbone(backbone_name(name))


def holdout_split(labels: np.ndarray, share: float = 0.2, seed: int = 0) -> np.ndarray:
    """Boolean mask of the held-out images: one stratified fold of round(1/share) (at least 2 per class)."""
    folds, _ = stratified_folds(labels, max(2, round(1.0 / share)), seed)
    return folds == 0


def _spread(samples: Sequence[Sample], limit: int, seed: int = 0) -> list[Sample]:
    """At most `limit` samples, drawn evenly at random so every class keeps its share."""
    if len(samples) <= limit:
        return list(samples)
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), limit, replace=False))
    return [samples[i] for i in keep]


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _measure(path: Path, batch: np.ndarray, labels: np.ndarray, threads: int, runs: int) -> tuple[float, float]:
    """(top-1 accuracy on the batch, batch-1 images/s: median of `runs` timed single-image calls)."""
    session = _session(path, threads)
    predicted = np.concatenate(
        [session.run([OUTPUTS[0]], {INPUT: batch[i : i + 32]})[0].argmax(1) for i in range(0, len(batch), 32)]
    )
    accuracy = float((predicted == labels).mean())
    one = {INPUT: np.ascontiguousarray(batch[:1])}
    times = []
    for r in range(runs + 3):
        start = time.perf_counter()
        session.run([OUTPUTS[0]], one)
        if r >= 3:
            times.append(time.perf_counter() - start)
    return accuracy, 1.0 / float(np.median(times))


def _split(data: LabeledSet, evaluation: LabeledSet | None) -> tuple[list[Sample], list[Sample], str]:
    """(training samples, held-out samples, what the held-out set is)."""
    if evaluation is not None:
        return list(data.samples), list(evaluation.samples), "the evaluation folder"
    held = holdout_split(np.array([s.class_index for s in data.samples]))
    train_samples = [s for s, h in zip(data.samples, held, strict=True) if not h]
    test_samples = [s for s, h in zip(data.samples, held, strict=True) if h]
    return train_samples, test_samples, "held-out 20 % of the data (stratified)"


@dataclass(frozen=True)
class _Held:
    """The held-out images every backbone is measured on, and how."""

    decoded: list[np.ndarray]
    labels: np.ndarray
    int8: bool
    threads: int
    speed_runs: int


def _rows(
    backbone: Backbone,
    name: str,
    train_samples: Sequence[Sample],
    num_classes: int,
    cache_dir: Path | None,
    opts: QuickOptions,
    held: _Held,
) -> list[ComparisonRow]:
    """Fit the head on one backbone's features, export FP32 (and INT8), measure each on the held-out images."""
    cache = FeatureCache(cache_dir, backbone.cache_key) if cache_dir is not None else None
    emb = embed_samples(backbone, train_samples, cache, torch.device("cpu"))
    y = np.array([s.class_index for s, k in zip(train_samples, emb.kept, strict=True) if k])
    head = fit_head(emb.features, y, num_classes, opts.l2, opts.standardize, emb.flipped if opts.use_flips else None)
    size = backbone.preprocessing.size
    batch = preprocess_batch(held.decoded, backbone.preprocessing)
    rows: list[ComparisonRow] = []
    with tempfile.TemporaryDirectory(prefix="camfleet-compare-") as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_onnx(static_padding(BundleModel(backbone, head), size), size, fp32)
        paths: list[tuple[Precision, Path]] = [("fp32", fp32)]
        if held.int8:
            q = Path(tmp) / "model.int8.onnx"
            quantize_int8(fp32, q, batch[:INT8_CALIBRATION] if len(batch) else batch)
            paths.append(("int8", q))
        for precision, path in paths:
            accuracy, speed = _measure(path, batch, held.labels, held.threads, held.speed_runs)
            rows.append(
                ComparisonRow(
                    backbone=name,
                    precision=precision,
                    accuracy=round(accuracy, 4),
                    images_per_s=round(speed, 2),
                    size_mb=round(path.stat().st_size / 1e6, 2),
                    input_size=size,
                    embedding_dim=backbone.embedding_dim,
                )
            )
    return rows


def compare_backbones(
    data: LabeledSet,
    backbones: Sequence[str],
    cache_dir: Path | None,
    evaluation: LabeledSet | None = None,
    int8: bool = True,
    threads: int = 1,
    eval_images: int = DEFAULT_EVAL_IMAGES,
    speed_runs: int = SPEED_RUNS,
    build: BackboneBuilder = build_candidate,
    options: QuickOptions | None = None,
    source: str = "",
    on_backbone: Callable[[int, int, str], None] | None = None,
) -> ModelComparison:
    """Fit the quick head per backbone on DATA (minus a held-out 20 % unless `evaluation` is given), export
    backbone + head to ONNX (and INT8), and measure each on the same held-out images with ONNX Runtime.

    A backbone that cannot be built (weights package missing) is skipped with the reason, not fatal.
    `on_backbone(i, n, name)` is called before each one (progress for a job).
    """
    if not backbones:
        raise DatasetError("compare: give at least one backbone")
    if evaluation is not None and evaluation.classes != data.classes:
        raise DatasetError(f"--eval classes {evaluation.classes} differ from --data classes {data.classes}")
    opts = options or QuickOptions()
    train_samples, test_samples, eval_set = _split(data, evaluation)
    test_samples = _spread(test_samples, eval_images)
    result = ModelComparison(
        data=source,
        classes=list(data.classes),
        train_images=len(train_samples),
        eval_images=len(test_samples),
        eval_set=eval_set,
        threads=threads,
    )
    decoded = [decode_image(s.read()) for s in test_samples]
    held = _Held(decoded, np.array([s.class_index for s in test_samples]), int8, threads, speed_runs)
    for i, name in enumerate(backbones):
        if on_backbone is not None:
            on_backbone(i, len(backbones), name)
        try:
            backbone = build(name)
        except Exception as exc:  # BackboneError, or timm refusing an unknown name
            log.warning("compare: skipping %s: %s", name, exc)
            result.skipped.append(SkippedBackbone(backbone=name, reason=str(exc)))
            continue
        result.rows += _rows(backbone, name, train_samples, len(data.classes), cache_dir, opts, held)
    return result


def render_table(cmp: ModelComparison) -> str:
    """A plain-text table, one row per backbone and precision."""
    head = f"{'backbone':<32} {'precision':<9} {'accuracy':>8} {'images/s':>9} {'size MB':>8} {'input':>5}"
    lines = [
        f"{cmp.train_images} training images, judged on {cmp.eval_images} images ({cmp.eval_set}); "
        f"ONNX Runtime CPU, batch 1, {cmp.threads} thread(s)",
        head,
        "-" * len(head),
    ]
    for r in cmp.rows:
        lines.append(
            f"{r.backbone:<32} {r.precision:<9} {r.accuracy:>8.3f} {r.images_per_s:>9.1f} {r.size_mb:>8.1f} "
            f"{r.input_size:>5}"
        )
    for skipped in cmp.skipped:
        lines.append(f"{skipped.backbone:<32} skipped: {skipped.reason}")
    return "\n".join(lines)
