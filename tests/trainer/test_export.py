"""ONNX export: parity with torch on real images, refusal to write a bad bundle, the ImageNet default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from camfleet_contract.anomaly import AnomalyCalibration
from camfleet_contract.bundle import INDEX, MODEL, verify_bundle
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_trainer.backbone import Backbone
from camfleet_trainer.export import (
    PARITY_ATOL,
    BundleModel,
    ExportError,
    check_parity,
    export_imagenet_default,
    export_onnx,
    write_bundle,
)

from .conftest import Trained

FOOTWEAR = {"running shoe", "Loafer", "clog", "sandal", "cowboy boot", "shoe shop"}


@pytest.fixture(scope="module")
def exported(trained: Trained, backbone: Backbone, tmp_path_factory: pytest.TempPathFactory):
    """The trained head exported on its own, for direct parity checks."""
    module = BundleModel(backbone, trained.outcome.quick.head)
    path = tmp_path_factory.mktemp("onnx") / MODEL
    export_onnx(module, backbone.preprocessing.size, path)
    return module, path


def test_onnx_matches_torch_on_real_images(exported, backbone: Backbone, validation_images) -> None:
    module, path = exported
    images = [im for ims in validation_images.values() for im in ims]
    report = check_parity(module, path, images, backbone)
    assert report.images == 15
    assert report.max_abs_logit_diff <= PARITY_ATOL
    assert report.max_abs_embedding_diff <= PARITY_ATOL


def test_parity_check_catches_a_model_that_differs(exported, backbone: Backbone, validation_images) -> None:
    module, path = exported
    head = torch.nn.Linear(module.head.in_features, module.head.out_features)
    with torch.no_grad():
        head.weight.copy_(module.head.weight)
        head.bias.copy_(module.head.bias + torch.tensor([0.0, 0.0, 1e-2]))
    other = BundleModel(backbone, head)
    with pytest.raises(ExportError, match="disagrees with torch"):
        check_parity(other, path, validation_images["hat"], backbone)


def test_no_bundle_is_written_when_the_check_cannot_run(trained: Trained, backbone: Backbone, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    cal = AnomalyCalibration(method="confidence", threshold=0.8)
    with pytest.raises(ExportError, match="no images"):
        write_bundle(out, backbone, ["dress", "hat", "shoes"], cal, trained.seed, [], head=trained.outcome.quick.head)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the staging folder is gone too


def test_existing_bundle_is_not_overwritten_by_default(trained: Trained, backbone: Backbone, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    cal = AnomalyCalibration(method="confidence", threshold=0.8)
    with pytest.raises(FileExistsError, match="not empty"):
        write_bundle(
            out,
            backbone,
            ["a", "b", "c"],
            cal,
            trained.seed,
            [np.zeros((300, 200, 3), np.uint8)],
            head=trained.outcome.quick.head,
        )
    assert (out / "keep.txt").read_text() == "mine"


def test_imagenet_default_bundle(backbone: Backbone, trainer_seed: str, tmp_path: Path, validation_images) -> None:
    manifest = export_imagenet_default(tmp_path / "default", trainer_seed, backbone=backbone)
    assert verify_bundle(tmp_path / "default", None) == manifest
    assert manifest.classifier == "imagenet" and len(manifest.classes) == 1000
    assert manifest.anomaly.method == "confidence" and manifest.anomaly.threshold == pytest.approx(0.8)
    assert not (tmp_path / "default" / INDEX).exists()
    runtime = ClassifierRuntime(tmp_path / "default")
    for result in runtime.classify(validation_images["shoes"]):
        labels = {p.label for p in result.predictions}
        assert FOOTWEAR & labels, labels
        assert result.distance is None
        assert result.anomaly == (result.probability < 0.2)
