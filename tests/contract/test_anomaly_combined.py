"""The 'combined' anomaly method: energy, SCALE-shaped energy, kNN distance and confidence as percentiles of
held-out normal images, combined; the runtime scores bundles with it from the model's own outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from pydantic import ValidationError

from camfleet_contract.anomaly import (
    AnomalyCalibration,
    batch_scores,
    calibrate_combined,
    combined_scores,
    scale_factor,
    statistics,
)
from camfleet_contract.bundle import Manifest, sign_bundle
from camfleet_contract.images import Preprocessing, preprocess_batch
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_contract.signing import generate_signing_key
from tests.support.tinybundle import CLASSES, tiny_onnx


def _lse(z: np.ndarray) -> np.ndarray:
    return np.log(np.exp(z).sum(axis=1))


def test_statistics_match_their_definitions() -> None:
    rng = np.random.default_rng(0)
    raw = np.abs(rng.normal(size=(6, 40)))  # pooled ReLU features: non-negative
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    w, b = rng.normal(size=(4, 40)), rng.normal(size=4)
    logits = unit @ w.T + b
    cal = AnomalyCalibration(method="confidence", temperature=2.0, head_bias=b.tolist(), scale_percentile=80.0)
    got = statistics(logits, unit, np.arange(6.0), cal, ["confidence", "distance", "energy", "scaled_energy"])
    np.testing.assert_allclose(got["energy"], -_lse(logits))
    p = np.exp(logits / 2.0) / np.exp(logits / 2.0).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got["confidence"], 1.0 - p.max(axis=1))
    np.testing.assert_allclose(got["distance"], np.arange(6.0))
    # SCALE on the raw features: scale by exp(sum / sum of the top 20 %), normalise, head. Scale-free r means the
    # unit embedding gives the same factor as the raw features.
    cut = np.percentile(raw, 80.0, axis=1, keepdims=True)
    r = raw.sum(1) / np.where(raw >= cut, raw, 0).sum(1)
    np.testing.assert_allclose(scale_factor(unit), np.exp(r))
    np.testing.assert_allclose(got["scaled_energy"], -_lse(np.exp(r)[:, None] * (unit @ w.T) + b))


def test_calibration_flags_the_target_share_and_unusual_images() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1, (400, 5)) + 8.0 * np.eye(5)[rng.integers(0, 5, 400)]
    dist = rng.uniform(0.1, 0.3, 400)
    cal = calibrate_combined({"energy": -_lse(logits), "distance": dist}, target_flag_rate=0.05)
    assert cal.method == "combined" and cal.statistics == ["energy", "distance"] and cal.calibration_images == 400
    flagged = batch_scores(logits, None, dist, cal) > cal.threshold
    assert 0.03 <= flagged.mean() <= 0.07
    # weak evidence for every class (low logits) and far from the training images: flagged
    odd = batch_scores(np.zeros((1, 5)), None, np.array([0.5]), cal)
    assert odd[0] > cal.threshold


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"statistics": []}, "at least one statistic"),
        ({"statistics": ["energy", "distance"], "refs": {"energy": [0.0, 1.0]}}, "distance"),
        ({"statistics": ["scaled_energy"], "refs": {"scaled_energy": [0.0]}}, "head_bias"),
    ],
)
def test_combined_refuses_incomplete_calibrations(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AnomalyCalibration(method="combined", **fields)


def _colour_images(n: int, seed: int) -> list[np.ndarray]:
    """Strongly coloured images (one dominant primary each): the tiny model's 'normal' inputs."""
    rng = np.random.default_rng(seed)
    images = []
    for c in rng.integers(0, 3, n):
        img = rng.integers(0, 40, (40, 40, 3)).astype(np.uint8)
        img[..., c] = rng.integers(200, 256)
        images.append(img)
    return images


def test_runtime_scores_combined_bundles_from_logits_and_embedding(tmp_path: Path) -> None:
    """Regression: the runtime scored every bundle from top-1 probability and distance alone."""
    onnx.save(tiny_onnx(len(CLASSES)), str(tmp_path / "model.onnx"))
    seed = generate_signing_key()
    manifest = Manifest(
        classifier="colour",
        version="1",
        classes=CLASSES,
        backbone="tiny-mean-colour",
        embedding_dim=3,
        preprocessing=Preprocessing(size=32, resize=32),
        anomaly=calibrate_combined({"energy": np.zeros(3)}),
    )
    sign_bundle(tmp_path, manifest, seed)
    normal_logits, _ = ClassifierRuntime(tmp_path).run(preprocess_batch(_colour_images(200, 0), manifest.preprocessing))
    cal = calibrate_combined({"energy": -_lse(normal_logits.astype(np.float64))}, target_flag_rate=0.05)
    sign_bundle(tmp_path, manifest.model_copy(update={"anomaly": cal}), seed)

    rt = ClassifierRuntime(tmp_path)
    black = np.zeros((40, 40, 3), np.uint8)  # below the mean in every channel: negative logits for every class
    images = [*_colour_images(20, 1), black]
    got = rt.classify(images)
    assert got[-1].anomaly and sum(g.anomaly for g in got[:-1]) <= 3
    logits, embedding = rt.run(preprocess_batch(images, manifest.preprocessing))
    np.testing.assert_allclose([g.anomaly_score for g in got], batch_scores(logits, embedding, None, cal))


def test_images_flagged_anyway_count_towards_the_flag_rate() -> None:
    """With 3 % of the normal images flagged anyway (a none-of-the-above class on top), the threshold flags
    2 % more by score, so 5 % of them are flagged in all, as the runtime flags them."""
    rng = np.random.default_rng(0)
    energy, distance = rng.normal(0, 1, 1000), rng.normal(0, 1, 1000)
    anyway = np.zeros(1000, dtype=bool)
    anyway[rng.choice(1000, 30, replace=False)] = True
    values = {"energy": energy, "distance": distance}
    cal = calibrate_combined(values, combine="max", flagged_anyway=anyway)
    flagged = (combined_scores(values, cal) > cal.threshold) | anyway
    assert abs(flagged.mean() - 0.05) <= 0.003
    plain = calibrate_combined(values, combine="max")
    assert plain.threshold < cal.threshold  # fewer need flagging by score
