"""Quick training end to end on real images: the bundle verifies, loads in the runtime and classifies well."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from camfleet_contract.bundle import INDEX, INDEX_LABELS, MODEL, REPORT, verify_bundle
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_trainer.backbone import Backbone
from camfleet_trainer.data import LabeledSet, load_folder
from camfleet_trainer.oof import stratified_folds
from camfleet_trainer.pipeline import BundleTarget
from camfleet_trainer.quick import QuickOptions
from camfleet_trainer.quick_bundle import QuickBundleOptions, train_quick_bundle

from .conftest import Trained, read_images


def test_bundle_verifies_and_describes_the_model(trained: Trained) -> None:
    manifest = verify_bundle(trained.bundle, None)
    assert manifest.classifier == "clothes"
    assert manifest.classes == ["dress", "hat", "shoes"]
    assert manifest.backbone == "tf_efficientnet_lite0" and manifest.embedding_dim == 1280
    assert manifest.preprocessing.size == 224
    assert {MODEL, INDEX, INDEX_LABELS, REPORT} <= set(manifest.files)
    assert manifest.anomaly.method == "combined" and manifest.anomaly.calibration_images == 60
    assert manifest.anomaly.statistics == ["energy", "distance"] and manifest.anomaly.combine == "max"
    assert manifest.anomaly.dist_ref and 0.5 < manifest.anomaly.threshold <= 1.0
    metrics = manifest.metrics
    assert metrics["oof_accuracy"] > 0.85, metrics
    assert set(metrics["per_class"]) == {"dress", "hat", "shoes"}
    assert metrics["export_parity"]["max_abs_logit_diff"] <= 1e-4
    labels = json.loads((trained.bundle / INDEX_LABELS).read_text())
    assert sorted(labels) == [0] * 20 + [1] * 20 + [2] * 20


def test_runtime_classifies_validation_images(trained: Trained, validation_images) -> None:
    runtime = ClassifierRuntime(trained.bundle)
    correct = total = 0
    for name, images in validation_images.items():
        results = runtime.classify(images)
        correct += sum(r.label == name for r in results)
        total += len(results)
        assert all(r.distance is not None and len(r.predictions) == 3 for r in results)
    # Chance is 1/3; measured 15/15.
    assert correct / total > 0.8, f"{correct}/{total} validation images right"


def test_oof_outputs_and_label_error_report(trained: Trained) -> None:
    quick = trained.outcome.quick
    assert quick.oof_probs.shape == (60, 3)
    assert np.allclose(quick.oof_probs.sum(axis=1), 1.0)
    assert quick.oof_distances.shape == (60,) and (quick.oof_distances >= 0).all()
    report = json.loads((trained.bundle / REPORT).read_text())
    ranking = report["label_errors"]
    assert len(ranking) == 60
    assert [r["p_label"] for r in ranking] == sorted(r["p_label"] for r in ranking)
    assert report["counts"] == {"dress": 20, "hat": 20, "shoes": 20}


def test_calibration_flags_about_the_target_share_of_normal_images(trained: Trained, validation_images) -> None:
    runtime = ClassifierRuntime(trained.bundle)
    results = [r for images in validation_images.values() for r in runtime.classify(images)]
    flagged = sum(r.anomaly for r in results)
    # Target 5 % of 15 images; loose bound for so few.
    assert flagged <= 4, [(r.label, round(r.anomaly_score, 3)) for r in results]


def test_unseen_class_is_flagged(
    clothing_subset: Path, backbone: Backbone, trainer_cache: Path, trainer_seed: str, tmp_path: Path
) -> None:
    """Trained on dress + hat only, photos of shoes are mostly flagged, far more than dresses and hats."""
    full = load_folder(clothing_subset / "train")
    keep = [s.class_index != full.classes.index("shoes") for s in full.samples]
    subset = full.subset(keep)
    data = LabeledSet(["dress", "hat"], subset.samples)
    target = BundleTarget(tmp_path / "b", trainer_seed, device=torch.device("cpu"))
    train_quick_bundle(data, backbone, target, QuickBundleOptions(cache_dir=trainer_cache))
    runtime = ClassifierRuntime(tmp_path / "b")
    val = read_images(clothing_subset / "validation")
    shoes_train = read_images(clothing_subset / "train")["shoes"]
    unseen = runtime.classify(val["shoes"] + shoes_train)
    known = runtime.classify(val["dress"] + val["hat"])
    unseen_rate = np.mean([r.anomaly for r in unseen])
    known_rate = np.mean([r.anomaly for r in known])
    assert unseen_rate >= 0.6, f"only {unseen_rate:.0%} of unseen shoe photos flagged"
    assert unseen_rate > known_rate + 0.3, (unseen_rate, known_rate)


def test_none_of_the_above_group_is_trained_and_flagged(
    clothing_subset: Path, backbone: Backbone, trainer_cache: Path, trainer_seed: str, tmp_path: Path
) -> None:
    """Shoes as a site's rejected images: the bundle names them none of the above, and the runtime flags a new
    shoe photo as fitting no group while dresses and hats are flagged no more than with the plain bundle."""
    data = load_folder(clothing_subset / "train", ["shoes"])
    target = BundleTarget(tmp_path / "b", trainer_seed, device=torch.device("cpu"))
    outcome = train_quick_bundle(data, backbone, target, QuickBundleOptions(cache_dir=trainer_cache))
    assert outcome.manifest.none_classes == ["shoes"] and outcome.quick is not None
    assert outcome.quick.calibration.calibration_images == 40  # dresses and hats only
    runtime = ClassifierRuntime(tmp_path / "b")
    val = read_images(clothing_subset / "validation")
    shoes = runtime.classify(val["shoes"])
    assert all(r.anomaly for r in shoes if r.label == "shoes") and np.mean([r.anomaly for r in shoes]) >= 0.8
    known = runtime.classify(val["dress"] + val["hat"])
    assert np.mean([r.anomaly for r in known]) <= 0.3, [(r.label, round(r.anomaly_score, 2)) for r in known]


def test_stratified_folds_keep_every_class_in_every_fold() -> None:
    labels = np.array([0] * 12 + [1] * 3 + [2] * 7)
    folds, k = stratified_folds(labels, 5)
    assert k == 3  # the smallest class has 3 images
    for f in range(k):
        assert set(labels[folds == f]) == {0, 1, 2}
    labels = np.array([0, 0, 1, 1, 1])
    assert stratified_folds(labels, 5)[1] == 2


def test_quick_options_defaults_are_the_measured_ones() -> None:
    opts = QuickOptions()
    assert opts.standardize and opts.use_flips and opts.folds == 5 and opts.neighbours == 5
    assert opts.target_flag_rate == pytest.approx(0.05)
