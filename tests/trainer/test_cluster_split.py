"""Near-duplicate clusters from the hub keep each cluster on one side of the validation split and in one fold."""

from __future__ import annotations

import numpy as np

from camfleet_trainer.oof import stratified_folds
from camfleet_trainer.schedule import sample_groups, stratified_split


def _clustered(seed: int = 0) -> tuple[np.ndarray, list[int | None]]:
    """3 classes x 30 images; in each class 5 clusters of 3 near-copies, the rest singletons (no cluster)."""
    labels = np.repeat(np.arange(3), 30)
    clusters: list[int | None] = [None] * len(labels)
    for cls in range(3):
        for c in range(5):
            for j in range(3):
                clusters[cls * 30 + c * 3 + j] = 1000 + cls * 10 + c
    order = np.random.default_rng(seed).permutation(len(labels))
    return labels[order], [clusters[i] for i in order]


def test_sample_groups() -> None:
    assert sample_groups([None, None]) is None
    groups = sample_groups([7, None, 7, None, 9])
    assert groups is not None
    assert groups[0] == groups[2] and len(set(groups.tolist())) == 4


def test_split_keeps_clusters_on_one_side() -> None:
    labels, clusters = _clustered()
    groups = sample_groups(clusters)
    for seed in range(10):
        train, val = stratified_split(labels, 0.2, seed=seed, groups=groups)
        assert sorted([*train.tolist(), *val.tolist()]) == list(range(len(labels)))
        side = {i: "val" for i in val.tolist()} | {i: "train" for i in train.tolist()}
        for c in {c for c in clusters if c is not None}:
            members = [i for i, x in enumerate(clusters) if x == c]
            assert len({side[i] for i in members}) == 1, (seed, c)
        for cls in range(3):  # every class on both sides, about 20 % in validation
            n_val = int((labels[val] == cls).sum())
            assert 4 <= n_val <= 8 and (labels[train] == cls).sum() > 0
    # without clusters the split is the plain per-image one (unchanged)
    plain = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(plain[0], stratified_split(labels, 0.2, seed=3, groups=None)[0])


def test_plain_split_does_separate_clusters() -> None:
    """The check above can fail: a per-image split puts near-copies on both sides."""
    labels, clusters = _clustered()
    split = [stratified_split(labels, 0.2, seed=s) for s in range(10)]
    straddling = 0
    for train, _val in split:
        in_train = set(train.tolist())
        for c in {c for c in clusters if c is not None}:
            sides = {i in in_train for i, x in enumerate(clusters) if x == c}
            straddling += len(sides) == 2
    assert straddling > 0


def test_folds_keep_clusters_together() -> None:
    labels, clusters = _clustered(1)
    groups = sample_groups(clusters)
    folds, k = stratified_folds(labels, 5, seed=0, groups=groups)
    assert k == 5
    for c in {c for c in clusters if c is not None}:
        assert len({int(folds[i]) for i, x in enumerate(clusters) if x == c}) == 1
    for fold in range(k):  # every fold still sees every class
        assert set(labels[folds == fold].tolist()) == {0, 1, 2}
