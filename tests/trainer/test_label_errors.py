"""Out-of-fold label-error ranking: flipped labels on real images rise to the top of the report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from camfleet_contract.bundle import REPORT
from camfleet_trainer.backbone import Backbone
from camfleet_trainer.data import LabeledSet, load_folder
from camfleet_trainer.embed import FeatureCache, embed_samples
from camfleet_trainer.label_errors import label_error_ranking
from camfleet_trainer.oof import label_probabilities, likely_mislabelled, neighbour_evidence, stratified_folds
from camfleet_trainer.quick import train_quick

from .conftest import Trained

FLIPS = {3: 2, 25: 0, 47: 1}  # sample index -> wrong label (dress 0-19, hat 20-39, shoes 40-59)


@pytest.fixture(scope="module")
def flipped(clothing_subset: Path, backbone: Backbone, trainer_cache: Path) -> tuple[LabeledSet, object]:
    """The subset with three labels flipped (one per class), embedded from the shared cache."""
    data = load_folder(clothing_subset / "train")
    assert [data.classes[s.class_index] for s in data.samples[::20]] == ["dress", "hat", "shoes"]
    samples = [replace(s, class_index=FLIPS.get(i, s.class_index)) for i, s in enumerate(data.samples)]
    noisy = LabeledSet(data.classes, samples)
    emb = embed_samples(backbone, noisy.samples, FeatureCache(trainer_cache, backbone.cache_key), torch.device("cpu"))
    assert emb.kept.all()
    return noisy, emb


def test_flipped_labels_rank_first(flipped) -> None:
    data, emb = flipped
    labels = np.array([s.class_index for s in data.samples])
    result = train_quick(emb.features, labels, data.classes, emb.flipped)
    ranking = label_error_ranking(data, result)
    top = {row.name for row in ranking[: len(FLIPS)]}
    assert top == {data.samples[i].name for i in FLIPS}, [(r.name[-30:], r.p_label) for r in ranking[:6]]
    for row in ranking[: len(FLIPS)]:
        assert row.predicted != row.label and row.p_label < 0.5 and 0.0 <= row.p_model <= 1.0
    assert np.allclose(result.label_probs.sum(axis=1), 1.0)
    assert [r.p_label for r in ranking] == sorted(r.p_label for r in ranking)


def test_every_bundle_report_carries_the_ranking(trained: Trained) -> None:
    ranking = json.loads((trained.bundle / REPORT).read_text())["label_errors"]
    assert len(ranking) == 60
    row = ranking[0]
    assert {"name", "sha256", "label", "predicted", "p_label", "p_predicted", "p_model", "distance"} <= set(row)
    assert Path(row["name"]).is_file() and len(row["sha256"]) == 64


def test_neighbour_evidence_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(37, 8)).astype(np.float32)
    features[5] = features[30] * 2.0 + 1e-3 * rng.normal(size=8)  # near-duplicate: distance ~0 across folds
    labels = np.arange(37) % 3
    folds, _ = stratified_folds(labels, 4)
    ev = neighbour_evidence(features, labels, folds, 3, k=3, label_k=5, chunk=10)
    z = features / np.linalg.norm(features, axis=1, keepdims=True)
    sim = z @ z.T
    for i in range(37):
        others = np.flatnonzero(folds != folds[i])
        want = np.mean(1.0 - np.sort(sim[i, others])[::-1][:3])
        assert ev.oof_distances[i] == pytest.approx(want, abs=1e-5)
        near = [j for j in np.argsort(-sim[i]) if j != i][:5]
        assert ev.label_share[i] == pytest.approx(np.bincount(labels[near], minlength=3) / 5)
    nearest = neighbour_evidence(features, labels, folds, 3, k=1, label_k=1).oof_distances
    assert (nearest[5] < 1e-4) == (folds[5] != folds[30])  # a duplicate counts only from another fold


def test_label_probabilities_combine_both_sources() -> None:
    model = np.array([[0.9, 0.1], [0.5, 0.5]])
    share = np.array([[0.0, 1.0], [1.0, 0.0]])
    q = label_probabilities(model, share, label_k=10)
    assert np.allclose(q.sum(axis=1), 1.0)
    assert q[0, 0] < 0.9 and q[1, 0] > 0.5  # each source pulls the other


def test_likely_mislabelled_uses_each_class_s_own_threshold() -> None:
    """An image counts when its belief in its label is under its class's mean belief *and* another class's belief
    reaches that class's mean. Class 0 is believed at 0.75 on average, class 1 (one the features confuse) at 0.43."""
    beliefs = np.array(
        [[0.95, 0.05], [0.95, 0.05], [0.9, 0.1], [0.6, 0.4], [0.35, 0.65]]  # labelled 0
        + [[0.4, 0.6], [0.45, 0.55], [0.5, 0.5], [0.6, 0.4], [0.9, 0.1]]  # labelled 1
    )
    labels = np.repeat([0, 1], 5)
    flagged = likely_mislabelled(beliefs, labels)
    # [0.6, 0.4] is not counted either way: under its own class's mean, but short of the other's
    assert np.flatnonzero(flagged).tolist() == [4, 9]
