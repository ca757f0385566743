"""A "none of the above" group, measured: does a group of a site's rejected images catch those kinds when they come
back, and does it help or hurt with kinds never seen at all?

Per case, three classes of `train/` are left out of the known ones: two new kinds (never seen) and one rejected kind
(a site deleted some of its images: `--none-images` of them, default 40, become the none-of-the-above group). Two
quick heads are fitted on the same 80 % of the known images (stratified): without the group, and with it as one
more class. Both are calibrated as quick mode does, by the contract's code: the shipped max(energy + distance) on the
held-out 20 % of known images, 5 % of them flagged in all (`flagged_anyway`: those whose top class is the none
group count as flagged), and an image is flagged when its score is above the threshold or, with the group, when
the none class is on top (`ClassifierRuntime.anomaly_flags`). The kNN reference holds the group's images too, as
the bundle's index does. Reported: the share flagged of the rejected kind's other images, of the new kinds, of
held-out known images, the known images' accuracy, and the AUROC of the rejected and the new kinds against the
known images (on the runtime's score: 1.0 where the none class is on top).

    python bench/none_group.py [--cases 15] [--seed 0] [--none-images 40] [--backbones lite0 --view std --pooling mean]
    python bench/none_group.py --smoke       # seconds: the tests' carried images, one case

Embeddings come from var/bench-cache (shared with bench/ood.py; filled on first use). Nothing is tuned here.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ood import add_feature_options, auroc, knn_distance, load_features  # noqa: E402

from camfleet_contract.anomaly import AnomalyCalibration, calibrate_combined, combined_scores, statistics  # noqa: E402
from camfleet_trainer.embed import l2_normalize  # noqa: E402
from camfleet_trainer.head import fit_head  # noqa: E402
from camfleet_trainer.oof import stratified_folds  # noqa: E402
from camfleet_trainer.quick import DEFAULT_ANOMALY, DEFAULT_FLAG_RATE, DEFAULT_NEIGHBOURS, QuickOptions  # noqa: E402


@dataclass(frozen=True)
class Flagged:
    """Shares flagged (and the known images' accuracy) of one head."""

    rejected: float  # the rejected kind's images not in the group
    new: float  # the two kinds never seen
    known: float  # held-out known images (5 % by construction)
    known_accuracy: float
    rejected_auroc: float  # the rejected kind's score against the held-out known images'
    new_auroc: float


def flag_shares(
    head_x: np.ndarray,
    head_xf: np.ndarray,
    head_y: np.ndarray,
    classes: int,
    none_class: int | None,
    held: dict[str, np.ndarray],
    held_known_y: np.ndarray,
    opts: QuickOptions,
) -> Flagged:
    """Fit the quick head, calibrate on held["known"], flag every held-out set as the runtime would."""
    head = fit_head(head_x, head_y, classes, opts.l2, opts.standardize, head_xf, opts.balanced)
    ref = l2_normalize(head_x)
    draft = AnomalyCalibration(method="confidence")
    logits, stats = {}, {}
    for name, rows in held.items():
        unit = l2_normalize(rows)
        logits[name] = head.logits(rows)
        distances = knn_distance(unit, ref, DEFAULT_NEIGHBOURS)
        stats[name] = statistics(logits[name], unit, distances, draft, list(DEFAULT_ANOMALY))

    def none_on_top(name: str) -> np.ndarray:
        top = logits[name].argmax(axis=1)
        return top == none_class if none_class is not None else np.zeros(len(top), dtype=bool)

    cal = calibrate_combined(
        stats["known"], combine="max", target_flag_rate=DEFAULT_FLAG_RATE, flagged_anyway=none_on_top("known")
    )
    # the runtime's score (ClassifierRuntime.anomaly_scores): 1.0 where the none class is on top
    score = {name: np.where(none_on_top(name), 1.0, combined_scores(stats[name], cal)) for name in held}
    share = {name: float(((score[name] > cal.threshold) | none_on_top(name)).mean()) for name in held}
    accuracy = float((logits["known"].argmax(axis=1) == held_known_y).mean())
    return Flagged(
        share["rejected"],
        share["new"],
        share["known"],
        accuracy,
        auroc(score["known"], score["rejected"]),
        auroc(score["known"], score["new"]),
    )


def run_case(
    x: np.ndarray, xf: np.ndarray, y: np.ndarray, new: tuple[int, int], rejected: int, n_none: int, seed: int
) -> tuple[Flagged, Flagged, int]:
    """(without the group, with it, images in the group) for one case."""
    opts = QuickOptions()
    known = ~np.isin(y, [*new, rejected])
    kept = np.flatnonzero(known)
    labels = np.unique(y[known])
    yk = np.searchsorted(labels, y[known])
    folds, _ = stratified_folds(yk, 5, opts.seed)
    tr, cal = kept[folds != 0], kept[folds == 0]
    ytr, ycal = yk[folds != 0], yk[folds == 0]
    pool = np.random.default_rng(seed).permutation(np.flatnonzero(y == rejected))
    group, back = pool[: min(n_none, len(pool) // 2)], pool[min(n_none, len(pool) // 2) :]
    held = {"known": x[cal], "new": x[np.isin(y, new)], "rejected": x[back]}
    k = len(labels)
    without = flag_shares(x[tr], xf[tr], ytr, k, None, held, ycal, opts)
    with_group = flag_shares(
        np.concatenate([x[tr], x[group]]),
        np.concatenate([xf[tr], xf[group]]),
        np.concatenate([ytr, np.full(len(group), k)]),
        k + 1,
        k,
        held,
        ycal,
        opts,
    )
    return without, with_group, len(group)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_feature_options(ap, "one case")
    ap.add_argument("--cases", type=int, default=15, help="a fixed random sample of this many cases (default 15)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the case sample and of the group's images")
    ap.add_argument("--none-images", type=int, default=40, help="images of the rejected kind in the group (40)")
    args = ap.parse_args()

    data, x, xf, y = load_features(args)
    names = data.classes
    if args.smoke:
        cases = [((names.index("pants"), names.index("skirt")), names.index("shoes"))]
    else:
        every = [(pair, c) for pair in itertools.combinations(range(len(names)), 2) for c in range(len(names))]
        every = [(pair, c) for pair, c in every if c not in pair]
        rng = np.random.default_rng(args.seed)
        cases = [every[i] for i in sorted(rng.choice(len(every), min(args.cases, len(every)), replace=False))]
    print("| new kinds | rejected kind (group size) | rejected flagged (AUROC) | new kinds flagged (AUROC) "
          "| known flagged | known accuracy |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    results = []
    start = time.perf_counter()
    for new, rejected in cases:
        without, with_group, size = run_case(x, xf, y, new, rejected, args.none_images, args.seed)
        results.append((without, with_group))
        print(
            f"| {names[new[0]]} + {names[new[1]]} | {names[rejected]} ({size}) "
            f"| {without.rejected:.2f} ({without.rejected_auroc:.2f}) → {with_group.rejected:.2f} "
            f"({with_group.rejected_auroc:.2f}) | {without.new:.2f} ({without.new_auroc:.2f}) → {with_group.new:.2f} "
            f"({with_group.new_auroc:.2f}) "
            f"| {without.known:.3f} → {with_group.known:.3f} "
            f"| {without.known_accuracy:.3f} → {with_group.known_accuracy:.3f} |",
            flush=True,
        )

    def mean(side: int, field: str) -> float:
        return float(np.mean([getattr(r[side], field) for r in results]))

    print(f"\n{len(results)} cases, {len(y)} images, {time.perf_counter() - start:.0f} s; without → with the group:")
    for field, label in (
        ("rejected", "rejected kind flagged"),
        ("new", "new kinds flagged"),
        ("known", "known flagged"),
        ("known_accuracy", "known accuracy"),
        ("rejected_auroc", "rejected kind AUROC"),
        ("new_auroc", "new kinds AUROC"),
    ):
        print(f"mean {label}: {mean(0, field):.3f} → {mean(1, field):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
