"""Several backbones on one input (quick mode's features): the bundle exports, passes the ONNX-vs-torch parity
check, verifies and classifies through the contract runtime; the embedding cache and the hub-vector reuse know
which recipe made a vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from camfleet_contract.bundle import verify_bundle
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_trainer.backbone import Backbone, BackboneError, build_backbone
from camfleet_trainer.config import TrainerSettings
from camfleet_trainer.data import load_folder
from camfleet_trainer.pipeline import BundleTarget
from camfleet_trainer.quick_bundle import QuickBundleOptions, train_quick_bundle
from camfleet_trainer.stack import BandPooled, band_rows, member_names, stack_backbones
from camfleet_trainer.worker import Worker

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def lite1() -> Backbone:
    return build_backbone("tf_efficientnet_lite1")


@pytest.fixture(scope="module")
def stack(backbone: Backbone, lite1: Backbone) -> Backbone:
    """Two backbones as quick mode ships them: the full view, band pooling."""
    return stack_backbones([backbone, lite1], "full", "bands")


def test_stack_takes_the_largest_input_and_concatenates_unit_features(backbone: Backbone, lite1: Backbone) -> None:
    stack = stack_backbones([backbone, lite1], "full")
    assert stack.name == "tf_efficientnet_lite0+tf_efficientnet_lite1"
    assert member_names(stack.name) == ["tf_efficientnet_lite0", "tf_efficientnet_lite1"]
    assert stack.embedding_dim == 1280 + 1280 and stack.num_classes == 0
    spec = stack.preprocessing
    assert (spec.size, spec.resize) == (lite1.preprocessing.size, lite1.preprocessing.size) == (240, 240)
    x = torch.rand(2, 3, 240, 240) * 2 - 1
    with torch.inference_mode():
        features = stack.features(x)
        own = lite1.features(x)
    assert features.shape == (2, 2560)
    # Each member's part is its own pooled feature, L2-normalised (lite1 sees the input as it is).
    assert torch.allclose(features[:, :1280].norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(features[:, 1280:], torch.nn.functional.normalize(own, dim=1), atol=1e-5)


def test_bands_pool_thirds_of_the_last_map_and_the_last_block(backbone: Backbone) -> None:
    assert band_rows(7) == [(0, 3), (2, 5), (4, 7)]  # neighbours share a row when the height does not divide
    assert band_rows(8) == [(0, 3), (2, 6), (5, 8)] and band_rows(9) == [(0, 3), (3, 6), (6, 9)]
    bands = stack_backbones([backbone], "full", "bands")
    assert bands.name == backbone.name and bands.embedding_dim == 3 * 1280 + 320
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.inference_mode():
        features = bands.features(x)
        m = backbone.model
        last = m.blocks(m.bn1(m.conv_stem(x)))
        fmap = m.forward_features(x)  # timm's own path to the last map: the band pooling runs the same layers
        rows = [fmap[:, :, 0:3], fmap[:, :, 2:5], fmap[:, :, 4:7], last]
    parts = [torch.nn.functional.normalize(r.mean(dim=(2, 3)), dim=1) for r in rows]
    expected = torch.nn.functional.normalize(torch.cat(parts, dim=1), dim=1)
    assert features.shape == (2, 4160) and torch.allclose(features, expected, atol=1e-5)
    # The same features as mean pooling would not tell top from bottom: a picture upside down changes them.
    with torch.inference_mode():
        flipped = bands.features(torch.flip(x, dims=[2]))
    assert not torch.allclose(flipped, features, atol=1e-3)


def test_bands_have_their_own_cache_key_and_refuse_other_models(backbone: Backbone, lite1: Backbone) -> None:
    mean = stack_backbones([backbone, lite1], "full")
    bands = stack_backbones([backbone, lite1], "full", "bands")
    assert bands.cache_key != mean.cache_key and bands.embedding_dim == 2 * (3 * 1280 + 320)
    assert stack_backbones([backbone], "full", "bands").cache_key != stack_backbones([backbone], "full").cache_key
    with pytest.raises(BackboneError, match="pooling"):
        stack_backbones([backbone], "full", "max")  # type: ignore[arg-type]
    with pytest.raises(BackboneError, match="EfficientNet-style"):
        BandPooled(torch.nn.Conv2d(3, 8, 3), 224)


def test_cache_key_names_backbones_weights_and_preprocessing(backbone: Backbone, lite1: Backbone) -> None:
    std = stack_backbones([backbone], "std")
    full = stack_backbones([backbone], "full")
    assert std.cache_key == backbone.cache_key == f"tf_efficientnet_lite0-{backbone.weights_sha256[:12]}"
    assert full.cache_key.startswith(backbone.cache_key + "-p") and full.preprocessing.resize == 224
    keys = {
        stack_backbones([backbone, lite1], "full").cache_key,
        stack_backbones([backbone, lite1], "std").cache_key,
        stack_backbones([lite1, backbone], "full").cache_key,
    }
    assert len(keys) == 3 and std.cache_key not in keys


def test_a_stack_refuses_what_one_input_cannot_serve(backbone: Backbone) -> None:
    with pytest.raises(BackboneError, match="twice"):
        stack_backbones([backbone, backbone])
    with pytest.raises(BackboneError, match="at least one"):
        stack_backbones([])
    with pytest.raises(BackboneError, match="view"):
        stack_backbones([backbone], "wide")  # type: ignore[arg-type]


def test_stack_bundle_exports_passes_parity_and_classifies(
    stack: Backbone, clothing_subset: Path, trainer_cache: Path, trainer_seed: str, validation_images, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    outcome = train_quick_bundle(
        load_folder(clothing_subset / "train"),
        stack,
        BundleTarget(out, trainer_seed, classifier="clothes", device=CPU),
        QuickBundleOptions(cache_dir=trainer_cache),
    )
    manifest = verify_bundle(out, None)
    assert manifest.backbone == stack.name and manifest.embedding_dim == 8320
    assert manifest.preprocessing == stack.preprocessing
    parity = manifest.metrics["export_parity"]
    assert parity["images"] == 8 and parity["max_abs_logit_diff"] <= 1e-4, parity
    assert outcome.quick is not None and outcome.quick.metrics["oof_accuracy"] > 0.85
    assert (trainer_cache / "embeddings" / stack.cache_key).is_dir()

    runtime = ClassifierRuntime(out)
    correct = total = 0
    for name, images in validation_images.items():
        results = runtime.classify(images)
        correct += sum(r.label == name for r in results)
        total += len(results)
        assert all(len(r.embedding) == 8320 for r in results)
        assert all(r.distance is not None for r in results)
    assert correct / total > 0.8, f"{correct}/{total} validation images right"
    emb = runtime.embed(validation_images["hat"][:2])
    assert emb.shape == (2, 8320) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize(
    ("quick", "view", "pooling", "reuse"),
    [
        (["tf_efficientnet_lite0"], "std", "mean", True),  # what the hub embedded with: the default bundle's recipe
        (["tf_efficientnet_lite0"], "full", "mean", False),  # another preprocessing
        (["tf_efficientnet_lite0"], "std", "bands", False),  # other features of the same pass
        (["tf_efficientnet_lite0", "tf_efficientnet_lite1"], "std", "mean", False),  # another model
    ],
)
def test_hub_vectors_are_used_only_for_the_default_bundles_recipe(
    quick: list[str], view: str, pooling: str, reuse: bool, tmp_path: Path
) -> None:
    settings = TrainerSettings(
        hub_url="http://127.0.0.1:9",
        worker="w",
        cache_dir=tmp_path,
        device="cpu",
        quick_backbones=quick,
        quick_view=view,
        quick_pooling=pooling,
    )
    worker = Worker(settings, client=object())  # type: ignore[arg-type]
    assert worker.hub_recipe(worker.quick_backbone) is reuse
    # A job naming one backbone gets it with the configured view and pooling.
    assert worker.hub_recipe(worker.quick_backbone_for("tf_efficientnet_lite0")) is ((view, pooling) == ("std", "mean"))
