"""Full mode: the whole model fine-tuned on real images, through the CLI, and the recipe's parts on their own."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from camfleet_contract.bundle import INDEX, MODEL, REPORT, verify_bundle
from camfleet_contract.images import Preprocessing
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_trainer.augment import AUGMENTS, augment, choose_augment
from camfleet_trainer.full import FullOptions
from camfleet_trainer.progress import EpochStats
from camfleet_trainer.schedule import EarlyStopping, lr_factor, stratified_split

from .conftest import FullRun
from .test_cli import run_cli

HUB_EPOCH_FIELDS = {"epoch", "loss", "train_acc", "val_acc", "val_loss", "epoch_s", "eta_s"}  # hub EpochMetrics


def test_cli_prints_the_estimate_then_each_epoch_then_the_report(full_run: FullRun) -> None:
    assert full_run.returncode == 0, full_run.stderr[-3000:]
    out = full_run.stdout
    estimate = re.search(r"^estimated .+ 2 epochs x .+ on cpu\).+before fine-tuning 0\.\d+$", out, re.M)
    epochs = [m.start() for m in re.finditer(r"^epoch +\d/2 +loss", out, re.M)]
    report = re.search(r"^validation accuracy", out, re.M)
    assert estimate and epochs and report, out
    assert estimate.start() < epochs[0] < report.start()  # the estimate comes before training starts
    assert len(epochs) == 2, out
    for expected in ("fine-tuned at 128 px", "48 train / 12 validation", "anomaly", "int8", "precision", "recall"):
        assert expected in out, out


def test_full_bundle_verifies_and_beats_chance(full_run: FullRun, validation_images) -> None:
    assert full_run.returncode == 0, full_run.stderr[-3000:]
    manifest = verify_bundle(full_run.bundle, None)
    assert manifest.classifier == "clothes" and manifest.classes == ["dress", "hat", "shoes"]
    assert manifest.preprocessing.size == 128 and manifest.preprocessing.resize == 146
    assert {MODEL, INDEX, REPORT} <= set(manifest.files)
    m = manifest.metrics
    assert m["mode"] == "full" and m["train_images"] == 48 and m["val_images"] == 12
    assert m["epochs_run"] == 2 and m["best_epoch"] in (0, 1, 2) and m["image_size"] == 128  # 0: the start
    assert 0.0 <= m["start_val_accuracy"] <= 1.0
    assert m["export_parity"]["max_abs_logit_diff"] <= 1e-4
    # The 4 validation shoes are the none-of-the-above group's: not normal images, left out of the calibration.
    assert manifest.none_classes == ["shoes"] and "none of the above: shoes" in full_run.stdout
    assert manifest.anomaly.calibration_images == 8 and manifest.anomaly.dist_ref
    runtime = ClassifierRuntime(full_run.bundle)
    assert runtime.index is not None and runtime.index.index.size == 48  # the training split's embeddings
    correct = total = 0
    for name, images in validation_images.items():
        results = runtime.classify(images)
        correct += sum(r.label == name for r in results)
        total += len(results)
        assert all(r.anomaly for r in results if r.label == "shoes")  # the none-of-the-above group on top
    # Chance is 1/3. Two short epochs at 128 px from a linear-probe start: measured 12-15 of 15.
    assert correct / total > 0.6, f"{correct}/{total} validation images right"


def test_full_report_has_the_epochs_split_and_mistakes(full_run: FullRun) -> None:
    assert full_run.returncode == 0, full_run.stderr[-3000:]
    report = json.loads((full_run.bundle / REPORT).read_text())
    assert report["mode"] == "full"
    assert report["split"] == {
        "train": {"dress": 16, "hat": 16, "shoes": 16},
        "validation": {"dress": 4, "hat": 4, "shoes": 4},
    }
    history = report["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(HUB_EPOCH_FIELDS <= set(h) for h in history)
    assert report["estimate"]["total_s"] > 0 and report["estimate"]["text"].startswith("estimated")
    assert len(report["metrics"]["confusion"]) == 3
    val_acc = report["metrics"]["val_accuracy"]
    assert len(report["misclassified"]) == round((1 - val_acc) * 12)
    for row in report["misclassified"]:
        assert row["label"] != row["predicted"] and len(row["sha256"]) == 64


def test_learning_rate_warms_up_then_decays_along_a_cosine() -> None:
    epochs, warmup, floor = 10.0, 1.0, 0.01
    points = np.linspace(0.0, epochs, 201)
    f = np.array([lr_factor(t, epochs, warmup, floor) for t in points])
    assert f[0] == 0.0 and lr_factor(0.5, epochs, warmup, floor) == pytest.approx(0.5)
    assert lr_factor(warmup, epochs, warmup, floor) == pytest.approx(1.0)
    up, down = f[points <= warmup], f[points >= warmup]
    assert np.all(np.diff(up) > 0) and np.all(np.diff(down) <= 1e-12)
    assert lr_factor(5.5, epochs, warmup, floor) == pytest.approx(floor + (1 - floor) * 0.5)  # half way: mean
    assert f[-1] == pytest.approx(floor) and lr_factor(12.0, epochs, warmup, floor) == pytest.approx(floor)
    assert lr_factor(3.0, epochs, 0.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))


def test_early_stopping_waits_patience_epochs_and_keeps_the_best() -> None:
    stop = EarlyStopping(patience=2)
    seen = [stop.update(acc, loss) for acc, loss in [(0.5, 1.0), (0.7, 0.8), (0.7, 0.7), (0.6, 0.6)]]
    assert seen == [True, True, True, False]  # equal accuracy with a lower loss still counts as better
    assert not stop.should_stop
    assert stop.update(0.7, 0.9) is False and stop.should_stop  # two epochs without gain
    assert stop.best == (0.7, 0.7)


def test_stratified_split_keeps_every_class_on_both_sides() -> None:
    labels = np.array([0] * 50 + [1] * 7 + [2] * 2)
    train, val = stratified_split(labels, 0.2, seed=1)
    assert len(set(train) & set(val)) == 0 and len(train) + len(val) == len(labels)
    assert np.bincount(labels[val]).tolist() == [10, 1, 1]  # 20 % rounded, at least one, never all
    assert np.bincount(labels[train]).tolist() == [40, 6, 1]
    again, _ = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(train, again)


def test_augmented_views_differ_and_are_normalised_like_the_contract(validation_images) -> None:
    rgb = validation_images["dress"][0]
    spec = Preprocessing(size=96, resize=110)
    rng = np.random.default_rng(0)
    views = [augment(rgb, spec, AUGMENTS["strong"], rng) for _ in range(4)]
    for v in views:
        assert v.shape == (3, 96, 96) and v.dtype == np.float32
        assert -1.0 - 1e-5 <= v.min() and v.max() <= 1.0 + 1e-5  # mean/std 0.5: [0, 1] maps to [-1, 1]
    assert not np.allclose(views[0], views[1])
    assert choose_augment(20).name == "strong" and choose_augment(300).name == "medium"
    assert choose_augment(2000).name == "light"


def test_epoch_figures_match_the_hubs_heartbeat_schema() -> None:
    stats = EpochStats(3, 10, 0.5, 0.8, 0.4, 0.85, 12.0, 4.0, 90.0, 32, 1e-4, True)
    assert set(stats.hub_metrics().model_dump(exclude_none=True)) == HUB_EPOCH_FIELDS


@pytest.mark.parametrize(
    ("values", "field"),
    [({"epochs": 0}, "epochs"), ({"test_size": 1.0}, "test_size"), ({"batch_size": 1}, "batch_size"),
     ({"augmentation": "lots"}, "augmentation")],
)  # fmt: skip
def test_full_options_refuse_bad_values(values: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FullOptions(**values)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "3"], "--epochs: only with --mode full"),
        (["--mode", "full", "--test-size", "1.5"], "--test-size=1.5"),
    ],
)
def test_train_refuses_bad_full_arguments(clothing_subset: Path, tmp_path: Path, extra: list, message: str) -> None:
    proc = run_cli("train", "--data", str(clothing_subset / "train"), "--out", str(tmp_path / "b"), *extra,
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "b").exists()
