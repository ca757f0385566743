"""ONNX export of backbone + head, checked against torch on real images, written as a signed bundle."""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from camfleet_contract import bundle as cb
from camfleet_contract.anomaly import AnomalyCalibration
from camfleet_contract.images import decode_image, preprocess_batch
from camfleet_contract.neighbours import NeighbourIndex
from camfleet_contract.runtime import INPUT, OUTPUTS
from camfleet_trainer.backbone import Backbone, build_backbone
from camfleet_trainer.embed import l2_normalize
from camfleet_trainer.errors import ExportError
from camfleet_trainer.head import LinearHead
from camfleet_trainer.quantize import Int8Inputs, add_int8

log = logging.getLogger(__name__)

OPSET = 17
# float32 through ~100 layers: ORT and torch fuse and order ops differently, so tiny differences are
# expected; anything above this means the graph or the preprocessing disagree, and the bundle is refused. Logits are
# held to it relative to their size: a sure fine-tuned model's logits reach ~50, where rounding alone is ~1e-4.
PARITY_ATOL = 1e-4
DEFAULT_CLASSIFIER = "imagenet"
CONFIDENCE_THRESHOLD = 0.8  # ImageNet default: flag when the top-1 probability is below 0.2


class BundleModel(nn.Module):
    """image (N,3,S,S) → (logits (N,C), embedding (N,D) L2-normalised), from the same pooled features.

    A torch head (ImageNet's, full mode's) reads the raw pooled features; a LinearHead says which it reads.
    """

    def __init__(self, backbone: Backbone, head: LinearHead | nn.Linear | None = None) -> None:
        super().__init__()
        self.backbone = backbone.model
        self.on_embedding = isinstance(head, LinearHead) and head.on_embedding
        if isinstance(head, LinearHead):
            head = linear_from(head)
        elif head is None:  # the backbone's own (ImageNet) classifier
            head = backbone.model.get_classifier()  # type: ignore[operator,assignment]
            assert isinstance(head, nn.Linear), f"backbone {backbone.name} has no linear classifier"
        self.head = head

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.backbone
        features = model.forward_head(model.forward_features(image), pre_logits=True)  # type: ignore[operator]
        embedding = nn.functional.normalize(features, p=2.0, dim=1)
        return self.head(embedding if self.on_embedding else features), embedding


class _PaddedConv(nn.Module):
    """A TF 'SAME' convolution with its padding fixed for one input size: a constant Pad node in ONNX."""

    def __init__(self, conv: nn.Conv2d, pad: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv = conv
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return nn.functional.conv2d(nn.functional.pad(x, self.pad), c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


def static_padding(module: nn.Module, size: int) -> nn.Module:
    """A copy of `module` whose runtime-computed 'SAME' paddings (timm's Conv2dSame) are constants for `size`.

    tf_efficientnet computes the stride-2 paddings from the input shape at run time; in ONNX that is a chain
    of Shape/Div/Ceil nodes which the INT8 quantiser mangles (measured: 77 % vs 91 % top-1 agreement on the
    ImageNet head). Inputs are always size x size (the manifest's preprocessing), so the padding is fixed.
    """
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import get_same_padding

    module = copy.deepcopy(module).eval()
    sizes: dict[int, tuple[int, int]] = {}
    convs = [m for m in module.modules() if isinstance(m, Conv2dSame)]
    if not convs:
        return module
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: sizes.__setitem__(id(mod), tuple(args[0].shape[-2:])))
        for m in convs
    ]
    try:
        with torch.inference_mode():
            module(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv2dSame):
                (ih, iw), (kh, kw) = sizes[id(child)], child.weight.shape[-2:]
                ph = get_same_padding(ih, kh, child.stride[0], child.dilation[0])
                pw = get_same_padding(iw, kw, child.stride[1], child.dilation[1])
                setattr(parent, name, _PaddedConv(child, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)))
    return module


def linear_from(head: LinearHead) -> nn.Linear:
    """A torch Linear holding the quick model's weights."""
    layer = nn.Linear(head.weight.shape[1], head.weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(head.weight))
        layer.bias.copy_(torch.from_numpy(head.bias))
    return layer


def export_onnx(module: nn.Module, size: int, path: Path) -> None:
    """TorchScript-based exporter (dynamo=False): quick and reliable for these convnets, dynamic batch axis."""
    module = module.eval().cpu().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    dummy = torch.zeros(2, 3, size, size)
    axes = {INPUT: {0: "batch"}, OUTPUTS[0]: {0: "batch"}, OUTPUTS[1]: {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice for dynamo=False
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)


@dataclass(frozen=True)
class Parity:
    """How far ONNX Runtime's outputs are from torch's on the check images (the manifest's `export_parity`)."""

    images: int
    max_abs_logit_diff: float
    max_abs_embedding_diff: float


def check_parity(module: BundleModel, onnx_path: Path, images: Sequence[np.ndarray], backbone: Backbone) -> Parity:
    """ORT on the contract's preprocessing vs torch on the same arrays; raises ExportError when they differ."""
    if not images:
        raise ExportError("no images to check the export on")
    batch = preprocess_batch(list(images), backbone.preprocessing)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got_logits, got_emb = session.run(list(OUTPUTS), {INPUT: batch})
    module = module.eval().cpu()
    with torch.inference_mode():
        want_logits, want_emb = (t.numpy() for t in module(torch.from_numpy(batch)))
    logit_diff = float(np.abs(got_logits - want_logits).max())
    logit_limit = PARITY_ATOL * max(1.0, float(np.abs(want_logits).max()))
    emb_diff = float(np.abs(got_emb - want_emb).max())
    same_top1 = bool((got_logits.argmax(1) == want_logits.argmax(1)).all())
    report = Parity(len(images), logit_diff, emb_diff)
    if not np.isfinite(got_logits).all() or logit_diff > logit_limit or emb_diff > PARITY_ATOL or not same_top1:
        raise ExportError(
            f"ONNX export disagrees with torch on {len(images)} real images: max |logit diff| {logit_diff:.2e} "
            f"(limit {logit_limit:.1e}), max |embedding diff| {emb_diff:.2e} (limit {PARITY_ATOL:.0e}), "
            f"same top-1: {same_top1}"
        )
    return report


def new_version() -> str:
    """A sortable version for a standalone bundle (the hub assigns its own on upload)."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def _replace_dir(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Move a finished bundle into place; an existing non-empty folder is replaced only when allowed."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"out: {out_dir} exists and is not empty (use --force to replace it)")
        shutil.rmtree(out_dir)
    elif out_dir.exists():
        out_dir.rmdir()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(out_dir)


def write_bundle(
    out_dir: str | Path,
    backbone: Backbone,
    classes: list[str],
    anomaly: AnomalyCalibration,
    seed_hex: str,
    check_images: Sequence[np.ndarray],
    head: LinearHead | nn.Linear | None = None,
    index: NeighbourIndex | None = None,
    classifier: str = DEFAULT_CLASSIFIER,
    version: str | None = None,
    metrics: dict[str, Any] | None = None,
    site: str = "",
    report: dict[str, Any] | None = None,
    overwrite: bool = False,
    int8: Int8Inputs | None = None,
    none_classes: Sequence[str] = (),
) -> cb.Manifest:
    """Export, check parity, write index + manifest + signature; `out_dir` appears only when all of it worked.

    With `int8`, also a statically quantised `model.int8.onnx`, kept only when it passes the 1-point rule
    (its measurements go into the metrics either way, with `int8_ok`).
    """
    out_dir = Path(out_dir)
    if not overwrite and out_dir.exists() and any(out_dir.iterdir()):  # fail before minutes of work
        raise FileExistsError(f"out: {out_dir} exists and is not empty (use --force to replace it)")
    module = BundleModel(backbone, head)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=_existing_parent(out_dir)))
    try:
        size = backbone.preprocessing.size
        # The graph has the fixed-size padding; parity is checked against the unmodified torch model.
        export_onnx(static_padding(module, size), size, staging / cb.MODEL)
        parity = check_parity(module, staging / cb.MODEL, check_images, backbone)
        log.info("export parity: %s", parity)
        extra: dict[str, object] = {"export_parity": asdict(parity)}
        if int8 is not None:
            int8_report = add_int8(staging / cb.MODEL, staging / cb.MODEL_INT8, int8)
            extra.update(int8=int8_report.manifest_json(), int8_ok=int8_report.included)
        if index is not None:
            index.save(staging)
        if report is not None:
            (staging / cb.REPORT).write_text(json.dumps(report, indent=1, default=_jsonable))
        manifest = cb.Manifest(
            site=site,  # "" until the hub assigns it when it registers and re-signs the bundle
            classifier=classifier,
            version=version or new_version(),
            classes=list(classes),
            none_classes=list(none_classes),
            backbone=backbone.name,
            embedding_dim=backbone.embedding_dim,
            preprocessing=backbone.preprocessing,
            anomaly=anomaly,
            metrics={**(metrics or {}), **extra},
        )
        manifest = cb.sign_bundle(staging, manifest, seed_hex)
        cb.verify_bundle(staging, None)
        _replace_dir(staging, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _existing_parent(out_dir: Path) -> Path:
    """Stage next to the destination (same filesystem, so the final rename is atomic)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return out_dir.parent


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names from timm (no download), shortened: "tench, Tinca tinca" → "tench".

    Two short names repeat ("crane" the bird and the machine, "maillot" twice); the later one keeps
    its next synonym or its WordNet id so every class name stays unique.
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    full = [info.index_to_description(i) for i in range(info.num_classes())]
    short = [d.split(",")[0].strip() for d in full]
    repeated = {n for n, c in Counter(short).items() if c > 1}
    seen: set[str] = set()
    names = []
    for i, (name, desc) in enumerate(zip(short, full, strict=True)):
        if name in repeated and name in seen:
            synonyms = [s.strip() for s in desc.split(",")[1:] if s.strip()]
            name = f"{name} ({synonyms[0] if synonyms else info.index_to_label_name(i)})"
        seen.add(short[i])
        names.append(name)
    return names


def export_imagenet_default(
    out_dir: str | Path,
    seed_hex: str,
    check_images: Sequence[np.ndarray] | None = None,
    backbone: Backbone | None = None,
    overwrite: bool = False,
) -> cb.Manifest:
    """The no-training default: the pretrained backbone with its ImageNet head, confidence-only anomaly flag."""
    backbone = backbone or build_backbone()
    if backbone.num_classes != 1000:
        raise ExportError(f"backbone {backbone.name} has {backbone.num_classes} classes, not the 1000 of ImageNet")
    anomaly = AnomalyCalibration(method="confidence", threshold=CONFIDENCE_THRESHOLD, temperature=1.0)
    return write_bundle(
        out_dir,
        backbone,
        imagenet_classes(),
        anomaly,
        seed_hex,
        check_images if check_images is not None else bundled_check_images(),
        site=cb.DEFAULT_SITE,
        classifier=DEFAULT_CLASSIFIER,
        version=f"{backbone.name}-in1k"[:64],
        metrics={"dataset": "imagenet-1k", "weights_sha256": backbone.weights_sha256},
        overwrite=overwrite,
    )


def bundled_check_images() -> list[np.ndarray]:
    """The few real photos shipped with the package, for checking an export when no training images exist."""
    folder = resources.files("camfleet_trainer") / "samples"
    return [
        decode_image(entry.read_bytes())
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".jpg")
    ]


def l2_index(features: np.ndarray, labels: np.ndarray) -> NeighbourIndex:
    """The bundle's usearch index over the L2-normalised training embeddings (cosine metric)."""
    return NeighbourIndex.build(l2_normalize(features), labels)
