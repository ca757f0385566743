"""New kinds caught: leave two classes out of `train/`, fit the quick head on the other classes, and measure how
many images of the two left-out classes each anomaly score flags when 5 % of held-out *known* images are flagged
(and the AUROC of left-out vs held-out known). Scores come from camfleet_contract.anomaly, the same code that
hub and agent run on a bundle's outputs; combinations average (or take the max of) the scores' percentiles
among the held-out known images, as the bundle's method "combined" does.

    python bench/ood.py [--pairs 15] [--all-pairs] [--seed 0]   # quick mode's default recipe
    python bench/ood.py --backbones lite0 --view std --pooling mean   # another recipe
    python bench/ood.py --smoke           # seconds: the tests' carried images, 2 pairs

Per pair: known images split 80/20 (stratified, seed 0); the head (quick mode's defaults: unit embedding,
standardised, mirror views, class balancing, L2 0.1) is fitted on the 80 %, the kNN reference is the 80 %, and
the 20 % calibrates (reference percentiles + the 5 % threshold). Quick mode itself calibrates on 5-fold
out-of-fold images of the whole set; one fold keeps this bench to one fit per pair. Embeddings come from
var/bench-cache (filled on first use).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED_DATA, add_recipe_options, chosen_backbones  # noqa: E402

from camfleet_contract.anomaly import AnomalyCalibration, Statistic, statistics  # noqa: E402
from camfleet_trainer.backbone import Backbone, configure_threads  # noqa: E402
from camfleet_trainer.config import DEFAULT_QUICK_BACKBONES  # noqa: E402
from camfleet_trainer.data import LabeledSet, Sample, load_folder  # noqa: E402
from camfleet_trainer.embed import FeatureCache, embed_samples, l2_normalize  # noqa: E402
from camfleet_trainer.head import fit_head  # noqa: E402
from camfleet_trainer.oof import stratified_folds  # noqa: E402
from camfleet_trainer.quick import DEFAULT_NEIGHBOURS, QuickOptions  # noqa: E402
from camfleet_trainer.stack import build_quick_backbone, parse_backbones  # noqa: E402

CACHE = REPO / "var" / "bench-cache"
FLAG_RATE = 0.05
SINGLE: list[Statistic] = ["confidence", "distance", "energy", "scaled_energy"]
COMBOS: list[tuple[str, tuple[Statistic, ...]]] = [
    ("mean", ("energy", "distance")),
    ("max", ("energy", "distance")),
    ("mean", ("scaled_energy", "distance")),
    ("mean", ("confidence", "energy", "distance")),
    ("mean", ("energy", "scaled_energy", "distance")),
    ("max", ("confidence", "distance")),  # the older 'percentile' method
    ("max", ("confidence", "energy", "distance")),
    ("max", ("scaled_energy", "distance")),
]
# Pairs of clearly different kinds, reported on their own (the target: >= 0.70).
CLEAR = {("hat", "skirt"), ("shoes", "skirt"), ("hat", "pants"), ("shoes", "t-shirt"), ("hat", "shirt")}


def auroc(known: np.ndarray, novel: np.ndarray) -> float:
    """P(novel scores above known), ties counted half (Mann-Whitney)."""
    both = np.concatenate([known, novel])
    order = both.argsort(kind="stable")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    # average ranks over ties
    _, inv, counts = np.unique(both, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, ranks)
    ranks = sums[inv] / counts[inv]
    n0, n1 = len(known), len(novel)
    return float((ranks[n0:].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def knn_distance(query: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Mean cosine distance to the k nearest reference unit vectors (the runtime's statistic, exactly)."""
    sim = query @ reference.T
    top = -np.partition(-sim, k - 1, axis=1)[:, :k]
    return np.mean(1.0 - np.clip(top, -1.0, 1.0), axis=1)


def rank(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.sort(reference), values, side="left") / len(reference)


def pair_scores(
    x: np.ndarray, xf: np.ndarray, y: np.ndarray, out: np.ndarray, known_classes: int, opts: QuickOptions
) -> dict[str, tuple[float, float]]:
    """{method: (flagged share of `out` at 5 % of held-out known, AUROC)} for one left-out pair."""
    folds, _ = stratified_folds(y, 5, opts.seed)
    tr, cal = folds != 0, folds == 0
    head = fit_head(x[tr], y[tr], known_classes, opts.l2, opts.standardize, xf[tr], opts.balanced)
    ref = l2_normalize(x[tr])
    draft = AnomalyCalibration(method="confidence", head_bias=[float(b) for b in head.bias])
    values = {}
    for name, rows in (("cal", x[cal]), ("out", out)):
        z = l2_normalize(rows)
        values[name] = statistics(head.logits(rows), z, knn_distance(z, ref, DEFAULT_NEIGHBOURS), draft, SINGLE)
    result: dict[str, tuple[float, float]] = {}
    methods: list[tuple[str, str, tuple[Statistic, ...]]] = [(s, "mean", (s,)) for s in SINGLE]
    methods += [(f"{how}({' + '.join(names)})", how, names) for how, names in COMBOS]
    for label, how, names in methods:
        rc = np.stack([rank(values["cal"][n], values["cal"][n]) for n in names])
        ro = np.stack([rank(values["out"][n], values["cal"][n]) for n in names])
        sc, so = (rc.mean(0), ro.mean(0)) if how == "mean" else (rc.max(0), ro.max(0))
        threshold = np.quantile(sc, 1.0 - FLAG_RATE)
        result[label] = (float((so > threshold).mean()), auroc(sc, so))
    return result


def features(data: LabeledSet, cached_only: bool, backbone: Backbone) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if cached_only:  # what is in the cache already (a quick look while it is being filled)
        cache = FeatureCache(CACHE, backbone.cache_key)
        rows = [(cache.get(s.sha256, backbone.embedding_dim), s.class_index) for s in data.samples]
        kept = [(r, label) for r, label in rows if r is not None]
        return np.stack([r[0] for r, _ in kept]), np.stack([r[1] for r, _ in kept]), np.array([lb for _, lb in kept])
    emb = embed_samples(backbone, data.samples, FeatureCache(CACHE, backbone.cache_key), torch.device("cpu"))
    if emb.flipped is None:
        raise SystemExit("the cache holds no mirror views for these images")
    y = np.array([s.class_index for s, k in zip(data.samples, emb.kept, strict=True) if k])
    return emb.features, emb.flipped, y


def smoke_set() -> LabeledSet:
    """The tests' carried clothing images, train/ and validation/ merged: 5 classes, 5-25 images each."""
    root = REPO / "tests" / "data" / "clothing"
    parts = [load_folder(root / "train"), load_folder(root / "validation")]
    classes = sorted({c for p in parts for c in p.classes})
    samples = [
        Sample(s.name, s.sha256, classes.index(p.classes[s.class_index]), s.read) for p in parts for s in p.samples
    ]
    return LabeledSet(classes, samples)


def add_feature_options(ap: argparse.ArgumentParser, smoke: str) -> None:
    """The options of the leave-out benches (this one and none_group.py) that say which features to use."""
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "clothing" / "train")
    add_recipe_options(ap)
    ap.add_argument("--smoke", action="store_true", help=f"the tests' carried images, {smoke}")
    ap.add_argument("--cached-only", action="store_true", help="only the images whose embeddings are cached")


def load_features(args: argparse.Namespace) -> tuple[LabeledSet, np.ndarray, np.ndarray, np.ndarray]:
    """The data set and its features (image, mirror image) and labels, as `add_feature_options` chose them."""
    configure_threads(None)
    data = smoke_set() if args.smoke else load_folder(args.data)
    names = parse_backbones(chosen_backbones(args, DEFAULT_QUICK_BACKBONES))
    backbone = build_quick_backbone(names, args.view, args.pooling)
    print(f"features: {backbone.name}, {args.view} view, {args.pooling} pooling (cache {backbone.cache_key})")
    return (data, *features(data, args.cached_only, backbone))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_feature_options(ap, "2 pairs")
    ap.add_argument("--pairs", type=int, default=15, help="a fixed random sample of this many pairs (default 15)")
    ap.add_argument("--all-pairs", action="store_true", help="every pair of classes")
    ap.add_argument("--seed", type=int, default=0, help="seed of the pair sample")
    ap.add_argument("--pair", nargs=2, action="append", metavar=("A", "B"), help="only these pairs (repeatable)")
    args = ap.parse_args()

    data, x, xf, y = load_features(args)
    classes = data.classes
    pairs = list(itertools.combinations(range(len(classes)), 2))
    if args.smoke:
        pairs = [(classes.index("pants"), classes.index("skirt")), (classes.index("hat"), classes.index("skirt"))]
    elif args.pair:
        pairs = [(classes.index(a), classes.index(b)) for a, b in args.pair]
    elif not args.all_pairs and args.pairs < len(pairs):
        rng = np.random.default_rng(args.seed)
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), args.pairs, replace=False))]
    opts = QuickOptions()
    table: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    start = time.perf_counter()
    for a, b in pairs:
        known = (y != a) & (y != b)
        remap = np.cumsum([c not in (a, b) for c in range(len(classes))]) - 1
        res = pair_scores(x[known], xf[known], remap[y[known]], x[~known], len(classes) - 2, opts)
        table[(classes[a], classes[b])] = res
        print(
            f"{classes[a]} + {classes[b]}: "
            + "  ".join(f"{m} {v[0]:.2f}/{v[1]:.2f}" for m, v in res.items() if m in ("distance", "energy"))
            + f"  ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    methods = list(next(iter(table.values())))
    best = max(methods, key=lambda m: np.mean([r[m][0] for r in table.values()]))
    print(
        f"\n{len(table)} pairs, {len(y)} images; flagged share of left-out images at {FLAG_RATE:.0%} of held-out known"
    )
    print("| method | mean flagged | mean AUROC | clear pairs flagged |")
    print("| --- | --- | --- | --- |")
    for m in sorted(methods, key=lambda m: -np.mean([r[m][0] for r in table.values()])):
        clear = [r[m][0] for p, r in table.items() if p in CLEAR]
        clear_s = f"{np.mean(clear):.3f}" if clear else "-"
        print(
            f"| {m} | {np.mean([r[m][0] for r in table.values()]):.3f} | "
            f"{np.mean([r[m][1] for r in table.values()]):.3f} | {clear_s} |"
        )
    print(f"\nper pair, best method {best} (flagged / AUROC), and distance, energy alone:")
    print("| pair | best | distance | energy |")
    print("| --- | --- | --- | --- |")
    for (a, b), r in table.items():
        print(
            f"| {a} + {b} | {r[best][0]:.2f} / {r[best][1]:.2f} | {r['distance'][0]:.2f} / {r['distance'][1]:.2f} "
            f"| {r['energy'][0]:.2f} / {r['energy'][1]:.2f} |"
        )
    print(f"best: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
