"""The INT8 variant of a bundle's model: ONNX Runtime static quantisation, judged against FP32 on labelled images.

Agents run `model.int8.onnx` only when the manifest says `int8_ok`: its top-1 accuracy on the evaluation images
is less than `MAX_LOSS_POINTS` below the FP32 model's. The file is left out of the bundle otherwise.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from camfleet_contract.runtime import INPUT, OUTPUTS

log = logging.getLogger(__name__)

MAX_LOSS_POINTS = 1.0  # accuracy points (percent) the INT8 model may lose and still be used
CALIBRATION_IMAGES = 128
CALIBRATION_BATCH = 8
SPEED_RUNS = 30

# Preprocessed batches (N, 3, S, S) float32 with their labels (N,) int.
Batches = Iterable[tuple[np.ndarray, np.ndarray]]


@dataclass
class Int8Inputs:
    """What the INT8 model is calibrated on (the site's images) and judged on (labelled, preprocessed batches)."""

    calibration: np.ndarray  # (N, 3, S, S) preprocessed training images, spread over the classes
    evaluation: Callable[[], Batches]  # called once; yields (batch, labels)
    eval_set: str  # what the evaluation images are, for the report: "validation split", "training images"


class _Reader(CalibrationDataReader):
    """Feeds the calibration images to ORT's calibrator a few at a time."""

    def __init__(self, images: np.ndarray) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            {INPUT: np.ascontiguousarray(images[i : i + CALIBRATION_BATCH])}
            for i in range(0, len(images), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _quiet_quantizer(record: logging.LogRecord) -> bool:
    """ORT's quantiser logs a line per rescaled tensor on the root logger at INFO; keep only its warnings."""
    return record.levelno >= logging.WARNING or "onnxruntime" not in record.pathname


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray) -> None:
    """Static quantisation in ORT's QOperator form (QLinearConv, QLinearMatMul, ...): per-channel int8 weights,
    uint8 activations with MinMax ranges from `calibration`.

    uint8 activations with int8 weights (U8S8) is what ORT's x86 kernels run fastest; the QOperator graph gave the
    same logits as the QDQ one and ran 2.3x FP32 against 1.8x (docs/BENCHMARKS.md, INT8 variants). The FP32
    graph must have static padding (see export.static_padding): quantising TF-style runtime padding arithmetic
    breaks it.
    """
    if len(calibration) == 0:
        raise ValueError("INT8 calibration needs at least one image")
    root = logging.getLogger()
    root.addFilter(_quiet_quantizer)  # a logger's filters see only its own records: others' logs pass
    try:
        _quantize(fp32_path, out_path, calibration)
    finally:
        root.removeFilter(_quiet_quantizer)


def _quantize(fp32_path: Path, out_path: Path, calibration: np.ndarray) -> None:
    with tempfile.TemporaryDirectory(prefix="camfleet-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)  # fold BN, infer shapes
        quantize_static(
            str(prepared),
            str(out_path),
            _Reader(calibration),
            quant_format=QuantFormat.QOperator,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def int8_acceptable(fp32_accuracy: float, int8_accuracy: float) -> bool:
    """The 1-point rule: the INT8 model may lose less than MAX_LOSS_POINTS of top-1 accuracy."""
    return (fp32_accuracy - int8_accuracy) * 100.0 < MAX_LOSS_POINTS


def batch1_ms(sessions: list[ort.InferenceSession], image: np.ndarray, runs: int) -> list[float]:
    """Median latency (ms) of a batch-1 call per session; calls alternate so machine noise hits each alike."""
    feed = {INPUT: np.ascontiguousarray(image[None])}
    times: list[list[float]] = [[] for _ in sessions]
    for r in range(runs + 2):
        for i, session in enumerate(sessions):
            start = time.perf_counter()
            session.run([OUTPUTS[0]], feed)
            if r >= 2:  # two warm-up rounds
                times[i].append((time.perf_counter() - start) * 1000.0)
    return [float(np.median(t)) for t in times]


@dataclass(frozen=True)
class Int8Comparison:
    """INT8 against FP32 on the same labelled images: top-1 accuracy, agreement, batch-1 latency, file sizes."""

    images: int
    fp32_accuracy: float
    int8_accuracy: float
    loss_points: float
    agreement: float
    fp32_ms_batch1: float
    int8_ms_batch1: float
    speedup: float | None
    fp32_bytes: int
    int8_bytes: int


@dataclass(frozen=True)
class Int8Report:
    """What `add_int8` did: the comparison and the verdict, or why quantising failed (`error`)."""

    included: bool
    comparison: Int8Comparison | None = None
    error: str | None = None
    eval_set: str = ""
    calibration_images: int = 0
    max_loss_points: float = MAX_LOSS_POINTS
    seconds: float = 0.0

    def manifest_json(self) -> dict[str, object]:
        """The manifest's `int8` entry: the comparison's figures and the verdict, or `included` and `error`."""
        if self.comparison is None:
            return {"included": self.included, "error": self.error}
        return asdict(self.comparison) | {
            "included": self.included,
            "eval_set": self.eval_set,
            "calibration_images": self.calibration_images,
            "max_loss_points": self.max_loss_points,
            "seconds": self.seconds,
        }


def compare_int8(fp32_path: Path, int8_path: Path, batches: Batches, runs: int = SPEED_RUNS) -> Int8Comparison:
    """Top-1 accuracy of both models on the labelled batches, their agreement, and batch-1 speed in ORT."""
    s32, s8 = _session(fp32_path), _session(int8_path)
    correct32 = correct8 = agree = total = 0
    first: np.ndarray | None = None
    for batch, labels in batches:
        if len(batch) == 0:
            continue
        first = batch[0] if first is None else first
        p32 = s32.run([OUTPUTS[0]], {INPUT: batch})[0].argmax(1)
        p8 = s8.run([OUTPUTS[0]], {INPUT: batch})[0].argmax(1)
        labels = np.asarray(labels)
        correct32 += int((p32 == labels).sum())
        correct8 += int((p8 == labels).sum())
        agree += int((p32 == p8).sum())
        total += len(labels)
    if total == 0 or first is None:
        raise ValueError("no images to compare the INT8 model on")
    ms32, ms8 = batch1_ms([s32, s8], first, runs)
    acc32, acc8 = correct32 / total, correct8 / total
    return Int8Comparison(
        images=total,
        fp32_accuracy=round(acc32, 4),
        int8_accuracy=round(acc8, 4),
        loss_points=round((acc32 - acc8) * 100.0, 2),
        agreement=round(agree / total, 4),
        fp32_ms_batch1=round(ms32, 2),
        int8_ms_batch1=round(ms8, 2),
        speedup=round(ms32 / ms8, 2) if ms8 > 0 else None,
        fp32_bytes=fp32_path.stat().st_size,
        int8_bytes=int8_path.stat().st_size,
    )


def add_int8(fp32_path: Path, int8_path: Path, inputs: Int8Inputs) -> Int8Report:
    """Quantise, measure, and keep `int8_path` only when it passes the 1-point rule; returns the report.

    A quantisation that fails is reported, not raised: the FP32 bundle is still good.
    """
    start = time.perf_counter()
    try:
        quantize_int8(fp32_path, int8_path, inputs.calibration)
        comparison = compare_int8(fp32_path, int8_path, inputs.evaluation())
    except Exception as exc:  # ORT's quantiser raises many types; a failure must not cost the FP32 bundle
        log.warning("INT8 export failed: %s: %s", type(exc).__name__, exc)
        int8_path.unlink(missing_ok=True)
        return Int8Report(included=False, error=f"{type(exc).__name__}: {exc}"[:500])
    included = int8_acceptable(comparison.fp32_accuracy, comparison.int8_accuracy)
    if not included:
        int8_path.unlink()
    report = Int8Report(
        included=included,
        comparison=comparison,
        eval_set=inputs.eval_set,
        calibration_images=len(inputs.calibration),
        max_loss_points=MAX_LOSS_POINTS,
        seconds=round(time.perf_counter() - start, 1),
    )
    log.info("INT8: %s", report)
    return report
