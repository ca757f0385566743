"""Several frozen backbones on one input: the quick model's features as one `Backbone` that export, embedding and
the cache treat like any other.

The bundle keeps one input tensor and one `Preprocessing` (what hub and agent already run): the input is the
largest member's size, each smaller member gets it resized in the graph to its own size (bilinear), and the
members' pooled features, each L2-normalised, are concatenated. The quick head reads the unit vector of that
concatenation (each member weighing the same), and the bundle's `embedding` output is that unit vector. Pooling
`mean` is timm's global average; `bands` (quick mode's default) averages the top, middle and bottom thirds of the
last feature map and the last block stage, from the same forward pass.

    >>> quick = build_quick_backbone(["tf_efficientnet_lite0", "tf_efficientnet_lite2"], view="full")
    >>> quick.name, quick.embedding_dim, quick.preprocessing.size, quick.preprocessing.resize
    ('tf_efficientnet_lite0+tf_efficientnet_lite2', 2560, 260, 260)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from camfleet_contract.bundle import Preprocessing
from camfleet_trainer.backbone import Backbone, BackboneError, build_backbone
from camfleet_trainer.config import POOLINGS, VIEWS, Pooling, View

SHORT_NAMES = ("lite0", "lite1", "lite2", "lite3", "lite4")
SEPARATOR = "+"  # between member names in the stack's name (the manifest's `backbone`)


class StackedFeatures(nn.Module):
    """(N, 3, S, S) → (N, sum of D_i): each member at its own input size, its pooled features L2-normalised.

    Offers timm's `forward_features` / `forward_head(pre_logits=True)` pair, so code written for one timm model
    (the bundle graph, embedding) runs it unchanged.
    """

    def __init__(self, models: Sequence[nn.Module], sizes: Sequence[int], input_size: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)
        self.sizes = [int(s) for s in sizes]
        self.input_size = int(input_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for model, size in zip(self.members, self.sizes, strict=True):
            xi = x
            if size != self.input_size:  # fixed at build time: the graph holds one Resize per smaller member
                xi = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            features = model.forward_head(model.forward_features(xi), pre_logits=True)  # type: ignore[operator]
            parts.append(nn.functional.normalize(features, p=2.0, dim=1))
        return torch.cat(parts, dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        if not pre_logits:
            raise BackboneError("a backbone stack has no classifier of its own")
        return x


def band_rows(height: int, bands: int = 3) -> list[tuple[int, int]]:
    """Rows [start, stop) of `bands` horizontal bands of a feature map; neighbours share a row when the height
    does not divide (7 rows: 0-3, 2-5, 4-7)."""
    edges = [height * i / bands for i in range(bands + 1)]
    return [(math.floor(edges[i]), math.ceil(edges[i + 1])) for i in range(bands)]


class BandPooled(nn.Module):
    """An EfficientNet-style timm model (stem, `blocks`, `conv_head`) pooled as `bands`: the averages of the top,
    middle and bottom thirds of its last feature map and the average of its last block stage, each L2-normalised,
    side by side. One forward pass, like timm's global average; where in the photo a part lies is kept, which
    tells dress from skirt and shirt from t-shirt better (measured in docs/BENCHMARKS.md)."""

    def __init__(self, model: nn.Module, size: int) -> None:
        super().__init__()
        if not all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
            raise BackboneError(f"pooling 'bands' needs an EfficientNet-style backbone, not {type(model).__name__}")
        self.model = model
        device = next(model.parameters()).device
        with torch.inference_mode():  # the map's height is fixed by the input size: constant slices in ONNX
            last, fmap = self._maps(torch.zeros(1, 3, size, size, device=device))
        self.rows = band_rows(int(fmap.shape[2]))
        self.dim = len(self.rows) * int(fmap.shape[1]) + int(last.shape[1])

    def _maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        last = m.blocks(m.bn1(m.conv_stem(x)))  # type: ignore[operator]
        return last, m.bn2(m.conv_head(last))  # type: ignore[operator]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        last, fmap = self._maps(x)
        parts = [fmap[:, :, a:b].mean(dim=(2, 3)) for a, b in self.rows] + [last.mean(dim=(2, 3))]
        return torch.cat([nn.functional.normalize(p, p=2.0, dim=1) for p in parts], dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        if not pre_logits:
            raise BackboneError("a band-pooled backbone has no classifier of its own")
        return x


def view_preprocessing(spec: Preprocessing, view: View) -> Preprocessing:
    """The member's own preprocessing (`std`: shorter side to size / crop_pct, centre crop) or the whole shorter
    side as the square (`full`: resize = size; measured +1.0 CV point for lite0 on clothing's 3:4 photos)."""
    if view == "std":
        return spec
    if view == "full":
        return spec.model_copy(update={"resize": spec.size})
    raise BackboneError(f"view: {view!r} is not one of {', '.join(VIEWS)}")


def stack_backbones(members: Sequence[Backbone], view: View = "std", pooling: Pooling = "mean") -> Backbone:
    """One Backbone over `members` (one input, features side by side); a single member pooled by its mean is
    returned as itself with the view's preprocessing (its cache key then names that preprocessing)."""
    if not members:
        raise BackboneError("backbones: give at least one")
    if pooling not in POOLINGS:
        raise BackboneError(f"pooling: {pooling!r} is not one of {', '.join(POOLINGS)}")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise BackboneError(f"backbones: {names} names one backbone twice")
    largest = max(members, key=lambda m: m.preprocessing.size)
    spec = view_preprocessing(largest.preprocessing, view)
    if len(members) == 1 and pooling == "mean":
        return replace(largest, preprocessing=spec)
    for m in members:
        if (m.preprocessing.mean, m.preprocessing.std) != (spec.mean, spec.std):
            raise BackboneError(
                f"backbones: {m.name} normalises with mean {m.preprocessing.mean} / std {m.preprocessing.std}, "
                f"{largest.name} with {spec.mean} / {spec.std}; one input cannot serve both"
            )
    sizes = [m.preprocessing.size for m in members]
    models: list[nn.Module] = [m.model for m in members]
    dims = [m.embedding_dim for m in members]
    digest = hashlib.sha256()
    for m, size in zip(members, sizes, strict=True):
        digest.update(f"{m.name}:{m.weights_sha256}:{size};".encode())
    if pooling == "bands":  # (mean keeps the digest it always had: caches written before stay valid)
        pooled = [BandPooled(model, size) for model, size in zip(models, sizes, strict=True)]
        models, dims = list(pooled), [p.dim for p in pooled]
        digest.update(b"pooling:bands;")
    model = StackedFeatures(models, sizes, spec.size).eval().requires_grad_(False)
    return Backbone(
        name=SEPARATOR.join(names),
        model=model,
        preprocessing=spec,
        embedding_dim=sum(dims),
        weights=largest.weights,
        weights_sha256=digest.hexdigest(),
        num_classes=0,
        native_preprocessing=None,  # the cache key always names the input's preprocessing
    )


def backbone_name(name: str) -> str:
    """A timm name from a short one: "lite1" → "tf_efficientnet_lite1"; any other name as given."""
    name = name.strip()
    return f"tf_efficientnet_{name}" if name in SHORT_NAMES else name


def parse_backbones(text: str) -> list[str]:
    """ "lite0,lite2" or timm names, comma-separated → timm names."""
    return [backbone_name(n) for n in text.split(",") if n.strip()]


def build_quick_backbone(names: Sequence[str], view: View = "std", pooling: Pooling = "mean") -> Backbone:
    """The quick model's feature extractor: the named backbones (packaged weights) on one input."""
    return stack_backbones([build_backbone(backbone_name(n)) for n in names], view, pooling)


def member_names(name: str) -> list[str]:
    """The backbones a manifest's `backbone` names ("a+b" for a stack)."""
    return name.split(SEPARATOR)
