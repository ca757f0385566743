"""Quick mode's anomaly calibration: the combined statistics from out-of-fold outputs, as the bundle ships them."""

from __future__ import annotations

import numpy as np

from camfleet_contract.anomaly import batch_scores
from camfleet_trainer.quick import QuickOptions, train_quick


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three well separated non-negative clusters in 32 dimensions (pooled ReLU features), 40 images each."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(0, 1, (3, 32))) * 3
    labels = np.repeat(np.arange(3), 40)
    x = np.abs(centres[labels] + rng.normal(0, 0.4, (120, 32))).astype(np.float32)
    flipped = np.abs(x + rng.normal(0, 0.05, x.shape)).astype(np.float32)
    return x, flipped, labels


def test_quick_calibrates_the_combined_statistics_on_out_of_fold_images() -> None:
    x, flipped, labels = _blobs()
    result = train_quick(x, labels, ["a", "b", "c"], flipped)
    cal = result.calibration
    assert cal.method == "combined" and cal.statistics == ["energy", "distance"] and cal.combine == "max"
    assert cal.calibration_images == 120
    # what the runtime computes from the final head's logits on the OOF references flags ~5 % of them
    scores = batch_scores(result.oof_logits, None, result.oof_distances, cal)
    assert 0.02 <= float(np.mean(scores > cal.threshold)) <= 0.08
    # an image of no known cluster: far from every training image and with weak logits for every class
    odd = np.abs(np.random.default_rng(5).normal(0, 1, (1, 32))).astype(np.float32)
    unit = odd / np.linalg.norm(odd)
    train_unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    distance = np.sort(1.0 - train_unit @ unit[0])[:5].mean()
    assert batch_scores(result.head.logits(odd), unit, np.array([distance]), cal)[0] > cal.threshold


def test_scaled_energy_is_calibrated_with_each_fold_head_bias() -> None:
    x, flipped, labels = _blobs(1)
    opts = QuickOptions(anomaly=("scaled_energy", "distance"), anomaly_combine="mean")
    cal = train_quick(x, labels, ["a", "b", "c"], flipped, opts).calibration
    assert cal.statistics == ["scaled_energy", "distance"] and cal.head_bias and len(cal.head_bias) == 3
    assert len(cal.refs["scaled_energy"]) == 120


def test_empty_anomaly_keeps_the_older_percentile_method() -> None:
    x, flipped, labels = _blobs(2)
    cal = train_quick(x, labels, ["a", "b", "c"], flipped, QuickOptions(anomaly=())).calibration
    assert cal.method == "percentile" and cal.conf_ref and cal.dist_ref


def test_none_of_the_above_images_are_left_out_of_the_normal_references() -> None:
    """Class c marked none of the above: trained on (three classes of logits), calibrated on a and b alone."""
    x, flipped, labels = _blobs(2)
    result = train_quick(x, labels, ["a", "b", "none"], flipped, none_classes=np.array([False, False, True]))
    assert result.oof_logits.shape[1] == 3 and result.calibration.calibration_images == 80
    normal = labels != 2
    scores = batch_scores(result.oof_logits[normal], None, result.oof_distances[normal], result.calibration)
    assert 0.02 <= float(np.mean(scores > result.calibration.threshold)) <= 0.08


def test_the_label_check_is_refitted_without_the_images_it_doubts() -> None:
    """Ten labels of 120 moved to another cluster: confident learning counts them, the fold heads are fitted a
    second time without them, and the ranking from the refit puts all ten first."""
    x, flipped, labels = _blobs(3)
    noisy = labels.copy()
    moved = np.arange(5, 120, 12)
    noisy[moved] = (labels[moved] + 1) % 3
    steps: list[tuple[int, int]] = []
    result = train_quick(x, noisy, ["a", "b", "c"], flipped, progress=lambda done, total: steps.append((done, total)))
    assert result.metrics["likely_mislabelled"] == len(moved)
    belief = result.label_probs[np.arange(120), noisy]
    assert set(np.argsort(belief)[: len(moved)].tolist()) == set(moved.tolist())
    assert [done for done, _ in steps] == list(range(1, 12)) and {total for _, total in steps} == {11}  # 5 + 5 + 1
    unrefitted = train_quick(x, noisy, ["a", "b", "c"], flipped, QuickOptions(refit_label_check=False))
    assert unrefitted.metrics["likely_mislabelled"] == len(moved)
    assert not np.allclose(unrefitted.label_probs, result.label_probs)  # the refit changed the beliefs
    assert np.allclose(unrefitted.oof_logits, result.oof_logits)  # and nothing else the bundle uses
