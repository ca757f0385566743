"""A tiny but real signed bundle: an ONNX graph built with onnx.helper (no torch), for hub and agent tests.

The graph: embedding = L2-normalise(mean colour), logits = embedding @ W; it separates images by dominant
colour, so real photos get real (if simple) predictions. `tiny_onnx` is the one tiny-model builder of the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from camfleet_contract.anomaly import calibrate
from camfleet_contract.bundle import Manifest, pack_bundle, sign_bundle
from camfleet_contract.images import Preprocessing
from camfleet_contract.neighbours import NeighbourIndex
from camfleet_contract.runtime import ClassifierRuntime

CLASSES = ["red", "green", "blue"]


def tiny_onnx(
    classes: int = 3, *, size: int = 32, embed_dim: int = 3, seed: int | None = None, scale: float = 10.0
) -> onnx.ModelProto:
    """image → mean colour → embedding (L2-normalised; the colour itself when embed_dim is 3) → logits.

    With seed None and 3 classes the logits are `scale` × the embedding: red, green, blue by dominant colour.
    With a seed the weights are random (reproducible), for tests that need several distinct models.
    """
    rng = np.random.default_rng(seed)
    e = np.eye(3, embed_dim, dtype=np.float32) if embed_dim == 3 else rng.normal(size=(3, embed_dim))
    w = np.eye(embed_dim, classes) * scale if seed is None else rng.normal(size=(embed_dim, classes)) * scale
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["colour"], axis=1),
        helper.make_node("MatMul", ["colour", "E"], ["raw"]),
        helper.make_node("LpNormalization", ["raw"], ["embedding"], axis=1, p=2),
        helper.make_node("MatMul", ["embedding", "W"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "camfleet-tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", embed_dim]),
        ],
        [numpy_helper.from_array(e.astype(np.float32), "E"), numpy_helper.from_array(w.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="camfleet-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_bundle(
    out_dir: Path, seed_hex: str, version: str = "1", classifier: str = "colour", with_index: bool = True
) -> Manifest:
    """Write and sign a tiny bundle into `out_dir`; returns its manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_onnx(len(CLASSES)), str(out_dir / "model.onnx"))
    rng = np.random.default_rng(0)
    train = np.abs(np.eye(3) + rng.normal(0, 0.1, (60, 3, 3))).reshape(-1, 3)[:180]
    labels = np.repeat(np.arange(3), 60)[:180]
    train = (train / np.linalg.norm(train, axis=1, keepdims=True)).astype(np.float32)
    index = NeighbourIndex.build(train, labels) if with_index else None
    if index is not None:
        index.save(out_dir)
    probs = 0.8 + 0.2 * rng.random(60)
    dists = index.distances(train[::3], 5) if index is not None else None
    manifest = Manifest(
        classifier=classifier,
        version=version,
        classes=CLASSES,
        backbone="tiny-mean-colour",
        embedding_dim=3,
        preprocessing=Preprocessing(size=32, resize=32),
        anomaly=calibrate(probs, dists, target_flag_rate=0.05, temperature=1.0, k=5),
    )
    return sign_bundle(out_dir, manifest, seed_hex)


def make_bundle_zip(tmp: Path, seed_hex: str, **kw: object) -> bytes:
    d = tmp / f"bundle-{kw.get('version', '1')}-{np.random.randint(1 << 30)}"
    make_bundle(d, seed_hex, **kw)  # type: ignore[arg-type]
    return pack_bundle(d)


def count_none_on_top(rt: ClassifierRuntime) -> list[int]:
    """Make `rt` record the batch size of each `none_on_top` call (the none-of-the-above argmax); returns the list."""
    calls: list[int] = []
    computed = rt.none_on_top

    def counted(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return computed(x)

    rt.none_on_top = counted  # type: ignore[method-assign]
    return calls
