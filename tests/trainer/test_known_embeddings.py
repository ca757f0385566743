"""Training on the hub's embeddings: vectors computed the hub's way (ONNX Runtime on the default bundle, reduced
JPEG decode, float16) are accepted for the same backbone and refused for any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from camfleet_contract.runtime import ClassifierRuntime
from camfleet_contract.vectors import pack_vectors, unpack_vectors
from camfleet_hub.datasets.embeddings import decode_for_embedding
from camfleet_trainer.backbone import Backbone
from camfleet_trainer.data import LabeledSet, load_folder
from camfleet_trainer.embed import KNOWN_PROBES, KNOWN_TOLERANCE, FeatureCache, embed_samples, l2_normalize
from camfleet_trainer.export import export_imagenet_default
from camfleet_trainer.quick import train_quick

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(clothing_subset: Path) -> LabeledSet:
    return load_folder(clothing_subset / "train")


@pytest.fixture(scope="module")
def hub_vectors(data: LabeledSet, backbone: Backbone, trainer_seed: str, tmp_path_factory) -> dict[str, np.ndarray]:
    """What GET /jobs/{id}/embeddings serves: the default bundle's embedding of the hub's decode, via the wire."""
    bundle = tmp_path_factory.mktemp("default") / "bundle"
    export_imagenet_default(bundle, trainer_seed, backbone=backbone)
    runtime = ClassifierRuntime(bundle)
    images = [decode_for_embedding(s.read(), 40_000_000) for s in data.samples]
    vectors = np.concatenate([runtime.embed(images[i : i + 16]) for i in range(0, len(images), 16)])
    return unpack_vectors(pack_vectors({s.sha256: v for s, v in zip(data.samples, vectors, strict=True)}))


def test_hub_vectors_are_used_for_the_same_backbone(data, backbone, hub_vectors, tmp_path: Path) -> None:
    emb = embed_samples(backbone, data.samples, FeatureCache(tmp_path, backbone.cache_key), CPU, known=hub_vectors)
    n = len(data.samples)
    assert emb.kept.all() and emb.reused == n - KNOWN_PROBES and emb.computed == KNOWN_PROBES
    assert emb.flipped is None  # the hub has no mirror views, so the head is fitted without them
    # How close the hub's vectors are to this trainer's own on every image (the tolerance has a wide margin).
    own = embed_samples(backbone, data.samples, FeatureCache(tmp_path, backbone.cache_key), CPU)
    distance = 1.0 - np.sum(l2_normalize(own.features) * l2_normalize(emb.features), axis=1)
    print(f"hub vs trainer cosine distance: max {distance.max():.5f}, mean {distance.mean():.5f}")
    assert distance.max() < KNOWN_TOLERANCE / 2, distance.max()
    labels = np.array([s.class_index for s in data.samples])
    on_hub = train_quick(emb.features, labels, data.classes, emb.flipped)
    on_own = train_quick(own.features, labels, data.classes)
    agree = (on_hub.oof_probs.argmax(1) == on_own.oof_probs.argmax(1)).mean()
    assert agree >= 0.95, agree


def test_vectors_of_another_model_are_not_used(data, backbone, hub_vectors, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    foreign = {sha: l2_normalize(rng.normal(size=(1, len(v))))[0] for sha, v in hub_vectors.items()}
    emb = embed_samples(backbone, data.samples, FeatureCache(tmp_path, backbone.cache_key), CPU, known=foreign)
    assert emb.reused == 0 and emb.computed == len(data.samples) and emb.flipped is not None
    shorter = {sha: v[:100] for sha, v in hub_vectors.items()}
    emb = embed_samples(backbone, data.samples, FeatureCache(tmp_path, backbone.cache_key), CPU, known=shorter)
    assert emb.reused == 0 and emb.computed == 0  # all cached by the run above
