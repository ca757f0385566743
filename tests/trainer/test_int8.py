"""The INT8 variant: real ORT static quantisation of a fine-tuned model, the 1-point rule, and who runs it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from camfleet_contract.bundle import MODEL, MODEL_INT8, sign_bundle, verify_bundle
from camfleet_contract.images import preprocess_batch
from camfleet_contract.runtime import INPUT, ClassifierRuntime
from camfleet_trainer.quantize import Int8Inputs, add_int8, int8_acceptable, quantize_int8

from .conftest import FullRun, read_images


def _batch(images: dict[str, list[np.ndarray]], bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    """All images preprocessed as the bundle wants, with their class index."""
    spec = verify_bundle(bundle, None).preprocessing
    names = sorted(images)
    flat = [(img, i) for i, name in enumerate(names) for img in images[name]]
    return preprocess_batch([img for img, _ in flat], spec), np.array([i for _, i in flat])


def _top1(model: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {INPUT: batch})[0].argmax(1)


@pytest.fixture(scope="module")
def quantized(full_run: FullRun, clothing_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full-mode model quantised on its own training images."""
    assert full_run.returncode == 0, full_run.stderr[-3000:]
    calibration, _ = _batch(read_images(clothing_subset / "train"), full_run.bundle)
    out = tmp_path_factory.mktemp("int8") / MODEL_INT8
    quantize_int8(full_run.bundle / MODEL, out, calibration[::2])
    return out


@pytest.mark.parametrize(
    ("fp32", "int8", "ok"),
    [(0.95, 0.95, True), (0.95, 0.945, True), (0.90, 0.92, True), (0.95, 0.94, False), (0.95, 0.90, False)],
)
def test_int8_is_used_only_when_it_loses_under_one_point(fp32: float, int8: float, ok: bool) -> None:
    assert int8_acceptable(fp32, int8) is ok


def test_int8_model_loads_in_ort_and_agrees_with_fp32(full_run: FullRun, quantized: Path, validation_images) -> None:
    ops = {n.op_type for n in onnx.load(str(quantized)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "QLinearConv"} <= ops  # QOperator form: int8 kernels
    assert quantized.stat().st_size < (full_run.bundle / MODEL).stat().st_size / 2  # int8 weights
    batch, labels = _batch(validation_images, full_run.bundle)
    fp32, int8 = _top1(full_run.bundle / MODEL, batch), _top1(quantized, batch)
    agreement = float((fp32 == int8).mean())
    assert agreement >= 0.8, f"INT8 agrees with FP32 on {agreement:.0%} of {len(labels)} validation images"


def test_full_bundle_reports_int8_and_follows_the_rule(full_run: FullRun) -> None:
    manifest = verify_bundle(full_run.bundle, None)
    info = manifest.metrics["int8"]
    assert info["eval_set"] == "validation split" and info["images"] == 12
    assert info["calibration_images"] == 48 and info["fp32_ms_batch1"] > 0 and info["int8_ms_batch1"] > 0
    assert info["included"] == (info["loss_points"] < 1.0) == manifest.metrics["int8_ok"]
    assert (MODEL_INT8 in manifest.files) == info["included"] == (full_run.bundle / MODEL_INT8).is_file()


def test_add_int8_keeps_a_model_that_holds_its_accuracy_and_drops_one_that_does_not(
    full_run: FullRun, clothing_subset: Path, validation_images, tmp_path: Path
) -> None:
    fp32_path = full_run.bundle / MODEL
    calibration, _ = _batch(read_images(clothing_subset / "train"), full_run.bundle)
    batch, _ = _batch(validation_images, full_run.bundle)

    good = tmp_path / "good.onnx"
    # Labelled by the INT8 model itself: it cannot be less accurate than FP32, so it must be kept.
    report = add_int8(fp32_path, good, Int8Inputs(calibration[::4], lambda: [(batch, _top1(good, batch))], "own"))
    assert report.included and report.comparison is not None and report.comparison.loss_points <= 0 and good.is_file()

    bad = tmp_path / "bad.onnx"
    # Calibrated on blank images, the activation ranges are wrong and real photos saturate them.
    blank = np.zeros_like(calibration[:8])
    labels = _top1(fp32_path, batch)  # FP32 is right on every image by construction
    report = add_int8(fp32_path, bad, Int8Inputs(blank, lambda: [(batch, labels)], "fp32 labels"))
    assert report.comparison is not None, report
    assert report.comparison.fp32_accuracy == 1.0 and report.comparison.loss_points >= 1.0, report
    assert not report.included and not bad.exists()


def test_runtime_prefers_int8_only_when_the_manifest_vouches_for_it(
    full_run: FullRun, quantized: Path, trainer_seed: str, validation_images, tmp_path: Path
) -> None:
    def bundle_with(int8_ok: bool) -> Path:
        folder = tmp_path / f"ok-{int8_ok}"
        shutil.copytree(full_run.bundle, folder)
        manifest = verify_bundle(folder, None)
        shutil.copy(quantized, folder / MODEL_INT8)
        metrics = {**manifest.metrics, "int8_ok": int8_ok}
        sign_bundle(folder, manifest.model_copy(update={"metrics": metrics}), trainer_seed)
        return folder

    vouched, refused = bundle_with(True), bundle_with(False)
    assert ClassifierRuntime(vouched, prefer_int8=True).model_file == MODEL_INT8
    assert ClassifierRuntime(vouched).model_file == MODEL  # FP32 unless asked
    assert ClassifierRuntime(refused, prefer_int8=True).model_file == MODEL
    images = [img for imgs in validation_images.values() for img in imgs]
    int8 = ClassifierRuntime(vouched, prefer_int8=True).classify(images)
    fp32 = ClassifierRuntime(vouched).classify(images)
    same = np.mean([a.label == b.label for a, b in zip(int8, fp32, strict=True)])
    assert same >= 0.8 and all(r.distance is not None for r in int8)
