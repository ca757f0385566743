"""Label errors: flip a share of the training labels at random, run quick mode's out-of-fold step on the
cached embeddings, and measure how many of the flipped images the ranking puts at its top
(precision at k = number flipped). Rankings compared in the same run:

- model:      the OOF linear head's calibrated probability of the given label (self-confidence)
- model+mirror: the same, averaged over the image and its mirror image
- neighbours: the share of the image's nearest neighbours carrying the given label
- margin:     probability of the best other class minus that of the given label
- combined:   what quick mode ships: the fold heads refitted without the images confident learning counts as
              likely mislabelled (oof.likely_mislabelled), model+mirror and neighbours combined
- oracle:     (--compare) the model fitted on the true labels: a reference for what these features allow

    python bench/label_errors.py [--rate 0.05] [--seeds 0 1 2]   # quick mode's default recipe
    python bench/label_errors.py --backbones lite0 --view std --pooling mean   # another recipe
    python bench/label_errors.py --smoke   # seconds: the tests' carried images, 10 % flipped, with --compare

The flipped copy is a folder-per-class tree of symbolic links in a temporary folder, loaded like any
dataset; embeddings come from var/bench-cache (filled on first use: minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED_DATA, SMOKE_DATA, add_recipe_options, chosen_backbones, require_shared  # noqa: E402

from camfleet_contract.runtime import softmax  # noqa: E402
from camfleet_trainer.backbone import configure_threads  # noqa: E402
from camfleet_trainer.config import DEFAULT_QUICK_BACKBONES  # noqa: E402
from camfleet_trainer.data import LabeledSet, load_folder  # noqa: E402
from camfleet_trainer.embed import FeatureCache, embed_samples  # noqa: E402
from camfleet_trainer.head import fit_head  # noqa: E402
from camfleet_trainer.oof import neighbour_evidence, stratified_folds  # noqa: E402
from camfleet_trainer.quick import QuickOptions, QuickResult, train_quick  # noqa: E402
from camfleet_trainer.stack import build_quick_backbone, parse_backbones  # noqa: E402

CACHE = REPO / "var" / "bench-cache"


def flipped_copy(data: LabeledSet, root: Path, rate: float, seed: int) -> tuple[Path, set[str]]:
    """A symlink tree of `data` with round(rate * N) labels moved to another class drawn at random;
    returns the tree and the names (file names) of the flipped images."""
    rng = np.random.default_rng(seed)
    n = len(data.samples)
    flip = set(rng.choice(n, round(rate * n), replace=False).tolist())
    flipped_names: set[str] = set()
    for c in data.classes:
        (root / c).mkdir(parents=True)
    for i, s in enumerate(data.samples):
        label = s.class_index
        if i in flip:
            label = int(rng.choice([c for c in range(len(data.classes)) if c != s.class_index]))
        src = Path(s.name)
        dst = root / data.classes[label] / f"{data.classes[s.class_index]}--{src.name}"
        dst.symlink_to(src.resolve())
        if i in flip:
            flipped_names.add(dst.name)
    return root, flipped_names


def precision_at_k(doubt: np.ndarray, is_flipped: np.ndarray) -> float:
    """Share of flipped images among the `is_flipped.sum()` most doubted."""
    k = int(is_flipped.sum())
    top = np.argsort(-doubt, kind="stable")[:k]
    return float(is_flipped[top].mean())


def alternatives(
    features: np.ndarray, flipped: np.ndarray, labels: np.ndarray, opts: QuickOptions, result: QuickResult
) -> dict[str, np.ndarray]:
    """Doubt scores (higher = more doubtful) of the other rankings, on the same folds and temperature."""
    rows = np.arange(len(labels))
    folds, k = stratified_folds(labels, opts.folds, opts.seed)
    mirror_logits = np.zeros_like(result.oof_logits)
    for f in range(k):
        tr, te = folds != f, folds == f
        head = fit_head(
            features[tr], labels[tr], mirror_logits.shape[1], opts.l2, opts.standardize, flipped[tr], opts.balanced
        )
        mirror_logits[te] = head.logits(flipped[te])
    both = (result.oof_probs + softmax(mirror_logits, result.temperature)) / 2
    label_k = int(result.metrics["label_neighbours"])
    share = neighbour_evidence(features, labels, folds, result.oof_probs.shape[1], opts.neighbours, label_k).label_share
    p_model = result.oof_probs[rows, labels]
    others = result.oof_probs.copy()
    others[rows, labels] = -1.0
    return {
        "model (self-confidence)": -p_model,
        "model+mirror": -both[rows, labels],
        f"neighbours (k={label_k})": -share[rows, labels],
        "margin": others.max(axis=1) - p_model,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "clothing" / "train")
    add_recipe_options(ap)
    ap.add_argument("--rate", type=float, default=0.05, help="share of labels flipped (default 0.05)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="flip seeds (one run each)")
    ap.add_argument("--compare", action="store_true", help="also score the alternative rankings (slower)")
    ap.add_argument("--smoke", action="store_true", help="the tests' carried images, 10 %% flipped, with --compare")
    args = ap.parse_args()
    if args.smoke:  # 60 images: 5 % would flip 3, too few for a ranking to show anything
        args.data, args.rate, args.compare = SMOKE_DATA / "clothing" / "train", 0.1, True
    else:
        require_shared(args.data)

    configure_threads(None)
    names = parse_backbones(chosen_backbones(args, DEFAULT_QUICK_BACKBONES))
    backbone = build_quick_backbone(names, args.view, args.pooling)
    print(f"features: {backbone.name}, {args.view} view, {args.pooling} pooling (cache {backbone.cache_key})")
    original = load_folder(args.data)
    cache = FeatureCache(CACHE, backbone.cache_key)
    opts = QuickOptions()
    scores: dict[str, list[float]] = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="label-errors-") as tmp:
            root, flipped_names = flipped_copy(original, Path(tmp) / "data", args.rate, seed)
            data = load_folder(root)
            emb = embed_samples(backbone, data.samples, cache, torch.device("cpu"))
            usable = data.subset(emb.kept.tolist())
            labels = np.array([s.class_index for s in usable.samples])
            is_flipped = np.array([Path(s.name).name in flipped_names for s in usable.samples])
            start = time.perf_counter()
            result = train_quick(emb.features, labels, usable.classes, emb.flipped, opts)
            oof_s = time.perf_counter() - start
            rows = np.arange(len(labels))
            shipped = precision_at_k(-result.label_probs[rows, labels], is_flipped)
            scores.setdefault("combined (shipped)", []).append(shipped)
            line = f"seed {seed}: {is_flipped.sum()} of {len(labels)} labels flipped; quick OOF step {oof_s:.1f}s; "
            line += f"precision at k = {is_flipped.sum()}: {shipped:.3f}; "
            line += f"counted as likely mislabelled: {result.metrics['likely_mislabelled']}"
            if args.compare:
                for name, doubt in alternatives(emb.features, emb.flipped, labels, opts, result).items():
                    scores.setdefault(name, []).append(precision_at_k(doubt, is_flipped))
                # Ceiling of the representation: the same model fitted on the *true* labels, asked about the given ones.
                true = np.array([usable.classes.index(Path(s.name).name.split("--")[0]) for s in usable.samples])
                oracle = train_quick(emb.features, true, usable.classes, emb.flipped, opts).oof_probs
                scores.setdefault("oracle: model on true labels", []).append(
                    precision_at_k(-oracle[rows, labels], is_flipped)
                )
            print(line, flush=True)
    print(
        f"\nprecision at k (k = number flipped, {args.rate:.0%} of {len(original.samples)} labels), "
        f"mean over seeds {args.seeds}:"
    )
    for name, values in scores.items():
        print(f"  {name:<30} {np.mean(values):.3f}   {' '.join(f'{v:.3f}' for v in values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
