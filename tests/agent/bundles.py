"""Tiny, real, signed model bundles for tests, built with the `onnx` helper API (no torch).

The model follows the bundle contract: input ``image`` (N, 3, 224, 224) float32 → ``embedding`` (the per-channel
mean, L2-normalised: GlobalAveragePool → Flatten → ReduceL2 → Div) and ``logits`` (embedding @ W). It "sees"
colour only, which is enough to tell a test's frames apart and is fast on any CPU.

Usage::

    seed = generate_signing_key()
    manifest = build_bundle(tmp_path / "b", seed, classifier="clothes", version="3")
    data = bundle_zip(seed, version="4")            # the same bundle as zip bytes, for an HTTP server
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from camfleet_contract.anomaly import AnomalyCalibration, calibrate
from camfleet_contract.bundle import MODEL, MODEL_INT8, SIGNATURE, Manifest, pack_bundle, sign_bundle
from camfleet_contract.images import Preprocessing
from camfleet_contract.messages import ModelAnnouncement
from camfleet_contract.neighbours import NeighbourIndex
from camfleet_contract.rollback import RollbackStatement
from tests.support.tinybundle import tiny_onnx

DEFAULT_CLASSES = ("dress", "hat", "shoes")
SITE = "shop"  # the site a test bundle is signed for unless a test names another
EMBEDDING_DIM = 3
OPSET = 17
IR_VERSION = 8


def tiny_onnx_model(num_classes: int, seed: int = 0, scale: float = 8.0) -> bytes:
    """Serialized ONNX model: image → (logits, L2-normalised colour embedding); dynamic batch."""
    return tiny_onnx(num_classes, size=224, embed_dim=EMBEDDING_DIM, seed=seed, scale=scale).SerializeToString()


def _calibration(with_index: bool) -> AnomalyCalibration:
    """A fixed, plausible calibration: most confident, near frames pass; unsure or far ones are flagged."""
    probs = np.linspace(0.55, 0.99, 20)
    distances = np.linspace(0.001, 0.05, 20) if with_index else None
    return calibrate(probs, distances, target_flag_rate=0.05, k=3)


def build_bundle(
    dest: Path,
    seed_hex: str,
    classifier: str = "clothes",
    version: str = "1",
    classes: Sequence[str] = DEFAULT_CLASSES,
    site: str = SITE,
    with_index: bool = True,
    model_seed: int = 0,
    onnx_bytes: bytes | None = None,
    int8: bool | None = None,
) -> Manifest:
    """Write a signed bundle folder at `dest` (created); `onnx_bytes` replaces the model (e.g. garbage).

    `int8` adds a real dynamically quantised ``model.int8.onnx``; True/False is the trainer's verdict
    (``int8_ok``: within 1 accuracy point of FP32), None leaves the INT8 model out.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MODEL).write_bytes(onnx_bytes if onnx_bytes is not None else tiny_onnx_model(len(classes), model_seed))
    metrics: dict[str, object] = {"note": "test bundle"}
    if int8 is not None:
        quantize_int8(dest / MODEL, dest / MODEL_INT8)
        metrics.update({"int8_ok": int8, "int8_accuracy_drop": 0.004 if int8 else 0.03})
    if with_index:
        rng = np.random.default_rng(model_seed + 1)
        emb = np.abs(rng.standard_normal((12, EMBEDDING_DIM))).astype(np.float32) + 0.5
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        NeighbourIndex.build(emb, np.arange(12) % len(classes)).save(dest)
    manifest = Manifest(
        site=site,
        classifier=classifier,
        version=version,
        classes=list(classes),
        backbone="tiny-colour-test",
        embedding_dim=EMBEDDING_DIM,
        preprocessing=Preprocessing(size=224, resize=224),
        anomaly=_calibration(with_index),
        metrics=metrics,
    )
    return sign_bundle(dest, manifest, seed_hex)


def quantize_int8(fp32: Path, out: Path) -> None:
    """ONNX Runtime's dynamic INT8 quantisation of the tiny model (its MatMuls become MatMulInteger)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().disabled, was = True, logging.getLogger().disabled  # ORT's "pre-process first" hint
    try:
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().disabled = was


def bundle_zip(seed_hex: str, **kwargs: object) -> bytes:
    """The bundle of `build_bundle(...)` as zip bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        build_bundle(Path(tmp) / "bundle", seed_hex, **kwargs)  # type: ignore[arg-type]
        return pack_bundle(Path(tmp) / "bundle")


def _zip_signature(data: bytes) -> str:
    """The manifest signature inside a bundle zip, or a dummy one when the zip is unreadable."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return zf.read(SIGNATURE).decode().strip()
    except (zipfile.BadZipFile, KeyError, OSError, EOFError):
        return "0" * 128


def announcement_for(
    data: bytes,
    url: str,
    classifier: str = "clothes",
    version: str = "1",
    classes: Sequence[str] = DEFAULT_CLASSES,
    rollback: RollbackStatement | None = None,
) -> ModelAnnouncement:
    """The announcement the hub would publish for zip bytes served at `url` (a path on the hub)."""
    return ModelAnnouncement(
        classifier=classifier,
        version=version,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        url=url,
        signature=_zip_signature(data),
        classes=list(classes),
        rollback=rollback,
    )
