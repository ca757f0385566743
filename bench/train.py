"""Quick-mode training on the shared clothing set: time to a signed bundle, validation accuracy through the
exported ONNX bundle, what each technique buys (ablation), the unseen-kind check, and embedding throughput
against the raw torch forward pass of the same backbone and batch, all measured in the same run.

    python bench/train.py [--cold] [--skip-ablation] [--json var/bench-train/results.json]
                          [--backbones lite0,lite2 --view full --pooling mean]   # default: quick mode's recipe
    python bench/train.py --smoke    # the tests' carried images, bundles in a temporary folder: does it still run

Embeddings are cached under var/bench-cache (git-ignored), so a re-run is warm. The cold time (no cached
embedding) is measured when that cache does not yet hold the training set, or with --cold (into a temporary
cache, leaving var/bench-cache alone).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED_DATA, SMOKE_DATA, add_recipe_options, chosen_backbones, require_shared  # noqa: E402

from camfleet_contract.images import decode_image  # noqa: E402
from camfleet_contract.runtime import ClassifierRuntime  # noqa: E402
from camfleet_contract.signing import load_or_create_key  # noqa: E402
from camfleet_contract.vectors import pack_vectors, unpack_vectors  # noqa: E402
from camfleet_hub.datasets.embeddings import decode_for_embedding
from camfleet_trainer.backbone import Backbone, build_backbone, configure_threads  # noqa: E402
from camfleet_trainer.config import DEFAULT_QUICK_BACKBONES  # noqa: E402
from camfleet_trainer.data import LabeledSet, load_folder  # noqa: E402
from camfleet_trainer.embed import DEFAULT_BATCH, FeatureCache, compute_features, embed_samples  # noqa: E402
from camfleet_trainer.evaluate import Evaluation, evaluate_bundle  # noqa: E402
from camfleet_trainer.export import export_imagenet_default  # noqa: E402
from camfleet_trainer.head import fit_head  # noqa: E402
from camfleet_trainer.oof import stratified_folds  # noqa: E402
from camfleet_trainer.pipeline import BundleTarget  # noqa: E402
from camfleet_trainer.quick import QuickOptions  # noqa: E402
from camfleet_trainer.quick_bundle import QuickBundleOptions, train_quick_bundle  # noqa: E402
from camfleet_trainer.stack import parse_backbones, stack_backbones  # noqa: E402

DATA = SHARED_DATA / "clothing"
CACHE = REPO / "var" / "bench-cache"
WORK = REPO / "var" / "bench-train"
LEFT_OUT = ("shoes", "skirt")
CPU = torch.device("cpu")


def timed_bundle(
    data: LabeledSet,
    out: Path,
    backbone: Backbone,
    seed: str,
    cache: Path,
    options: QuickOptions,
    known: dict[str, np.ndarray] | None = None,
) -> tuple[float, object]:
    """Wall time of one whole quick-mode job: embed (cache first) → fit → export → parity → sign."""
    start = time.perf_counter()
    target = BundleTarget(out, seed, classifier="clothes", overwrite=True, device=CPU)
    outcome = train_quick_bundle(data, backbone, target, QuickBundleOptions(options, cache, known))
    return time.perf_counter() - start, outcome


def hub_vectors(data: LabeledSet, backbone: Backbone, seed: str, folder: Path) -> tuple[float, dict[str, np.ndarray]]:
    """The vectors a hub stores at import (its decode, the default bundle through ONNX Runtime, float16 on the
    wire) and the seconds that took: work done as images arrive, not by a training job."""
    export_imagenet_default(folder, seed, backbone=backbone, overwrite=True)
    runtime = ClassifierRuntime(folder)
    start = time.perf_counter()
    vectors: dict[str, np.ndarray] = {}
    for i in range(0, len(data.samples), DEFAULT_BATCH):
        chunk = data.samples[i : i + DEFAULT_BATCH]
        embedded = runtime.embed([decode_for_embedding(s.read(), 40_000_000) for s in chunk])
        vectors.update({s.sha256: v for s, v in zip(chunk, embedded, strict=True)})
    return time.perf_counter() - start, unpack_vectors(pack_vectors(vectors))


def cached_features(backbone: Backbone, data: LabeledSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, mirrored features, labels) of a split from the bench cache."""
    emb = embed_samples(backbone, data.samples, FeatureCache(CACHE, backbone.cache_key), CPU)
    labels = np.array([s.class_index for s, k in zip(data.samples, emb.kept, strict=True) if k])
    return emb.features, emb.flipped, labels


def accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(accuracy, balanced accuracy)."""
    recalls = [float(np.mean(pred[labels == c] == c)) for c in range(num_classes) if (labels == c).any()]
    return float(np.mean(pred == labels)), float(np.mean(recalls))


def variant_scores(
    opts: QuickOptions,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray, np.ndarray],
    num_classes: int,
) -> dict[str, float]:
    """5-fold CV accuracy on train (how a choice is made) and validation accuracy (how it is reported)."""
    x, xf, y = train
    folds, k = stratified_folds(y, opts.folds, opts.seed)
    oof = np.zeros((len(y), num_classes))
    for f in range(k):
        tr, te = folds != f, folds == f
        head = fit_head(
            x[tr], y[tr], num_classes, opts.l2, opts.standardize, xf[tr] if opts.use_flips else None, opts.balanced
        )
        oof[te] = head.logits(x[te])
    head = fit_head(x, y, num_classes, opts.l2, opts.standardize, xf if opts.use_flips else None, opts.balanced)
    cv_acc, cv_bal = accuracy(oof.argmax(1), y, num_classes)
    val_acc, val_bal = accuracy(head.logits(val[0]).argmax(1), val[2], num_classes)
    return {"cv_accuracy": cv_acc, "cv_balanced": cv_bal, "val_accuracy": val_acc, "val_balanced": val_bal}


def ablation(backbone: Backbone, train: LabeledSet, val: LabeledSet) -> list[dict[str, object]]:
    """Each technique switched off in turn (and a few L2 strengths), against the defaults, same folds."""
    tr, va = cached_features(backbone, train), cached_features(backbone, val)
    base = QuickOptions()
    variants: list[tuple[str, QuickOptions]] = [
        ("defaults", base),
        ("no standardization", replace(base, standardize=False)),
        ("no mirrored views", replace(base, use_flips=False)),
        ("no class balancing", replace(base, balanced=False)),
        ("none of the three", replace(base, standardize=False, use_flips=False, balanced=False)),
    ]
    variants += [(f"l2 = {l2:g}", replace(base, l2=l2)) for l2 in (0.01, 0.03, 0.3, 1.0) if l2 != base.l2]
    rows: list[dict[str, object]] = []
    for name, opts in variants:
        start = time.perf_counter()
        scores = variant_scores(opts, tr, va, len(train.classes))
        rows.append({"variant": name, **scores, "seconds": round(time.perf_counter() - start, 1)})
        print(
            f"  {name:<22} CV acc {scores['cv_accuracy']:.4f} (bal {scores['cv_balanced']:.4f})   "
            f"validation acc {scores['val_accuracy']:.4f} (bal {scores['val_balanced']:.4f})",
            flush=True,
        )
    return rows


def embedding_throughput(backbone: Backbone, samples: list, tmp: Path, seconds: float) -> dict[str, float]:
    """Images/s of embed_samples (read + decode + preprocess + image and mirror forward, no cache) ÷ the raw
    torch forward of the same backbone on already preprocessed tensors at the same batch (image + mirror)."""
    from camfleet_contract.images import preprocess_batch

    emb_start = time.perf_counter()
    embed_samples(backbone, samples, FeatureCache(tmp / "throughput-cache", backbone.cache_key), CPU)
    pipeline_rate = len(samples) / (time.perf_counter() - emb_start)
    batch = preprocess_batch([decode_image(s.read()) for s in samples[:DEFAULT_BATCH]], backbone.preprocessing)
    compute_features(backbone, batch, CPU)  # warm-up
    reps, start = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - start < seconds:
        compute_features(backbone, batch, CPU)
        reps += 1
    raw_rate = reps * len(batch) / (time.perf_counter() - start)
    return {
        "images": len(samples),
        "pipeline_img_s": round(pipeline_rate, 2),
        "raw_forward_img_s": round(raw_rate, 2),
        "ratio": round(pipeline_rate / raw_rate, 3),
    }


def agent_rate(bundle: Path, images: list[np.ndarray], seconds: float) -> float:
    """Images/s of `ClassifierRuntime.classify` at batch 1 (preprocess, ONNX Runtime, anomaly score), as an agent
    classifies one frame at a time."""
    runtime = ClassifierRuntime(bundle)
    runtime.classify(images[:1])  # warm-up
    done, start = 0, time.perf_counter()
    while done < 3 or time.perf_counter() - start < seconds:
        runtime.classify([images[done % len(images)]])
        done += 1
    return done / (time.perf_counter() - start)


def known_classes(data: LabeledSet, classes: list[str]) -> LabeledSet:
    """`data`'s samples of `classes` only, labelled by their index in `classes`: a validation folder with kinds
    the training set lacks (the tests' carried one has pants and skirts) must not shift the label indices."""
    return LabeledSet(
        classes,
        [
            replace(s, class_index=classes.index(data.classes[s.class_index]))
            for s in data.samples
            if data.classes[s.class_index] in classes
        ],
    )


def cache_holds(backbone: Backbone, data: LabeledSet) -> bool:
    cache = FeatureCache(CACHE, backbone.cache_key)
    return all(cache.get(s.sha256, backbone.embedding_dim) is not None for s in data.samples)


def describe(ev: Evaluation) -> str:
    unseen = ", ".join(
        f"{u.name} {u.flagged}/{u.images} ({u.flag_rate:.1%}, called {', '.join(list(u.predicted_as)[:2])})"
        for u in ev.unseen
    )
    return (
        f"accuracy {ev.accuracy:.4f} (balanced {ev.balanced_accuracy:.4f}) on {ev.images} images; "
        f"known images flagged {ev.flagged}/{ev.images} ({ev.flag_rate:.1%})"
        + (f"; unseen: {unseen}" if unseen else "")
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="folder with train/ and validation/ (folder per class)")
    ap.add_argument("--cold", action="store_true", help="also time a run with no cached embedding (minutes)")
    ap.add_argument("--skip-ablation", action="store_true")
    ap.add_argument("--throughput-images", type=int, default=128, help="images for the embedding throughput")
    ap.add_argument("--json", type=Path, default=None, help="where to write the figures (default: WORK/results.json)")
    ap.add_argument("--smoke", action="store_true", help="the tests' carried images; bundles and figures go to a temp")
    add_recipe_options(ap)
    ap.add_argument("--agent-seconds", type=float, default=10.0, help="seconds per bundle for the agent images/s")
    args = ap.parse_args()
    if args.smoke:
        args.data, args.throughput_images = SMOKE_DATA / "clothing", 16
    else:
        require_shared(args.data / "train", args.data / "validation")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp_name:
        # --smoke leaves var/bench-train (the real run's bundle, key and figures) alone.
        work = Path(tmp_name) / "work" if args.smoke else WORK
        run(args, work, Path(tmp_name))
    return 0


def run(args: argparse.Namespace, work: Path, tmp: Path) -> None:
    configure_threads(None)
    work.mkdir(parents=True, exist_ok=True)
    seed = load_or_create_key(work / "trainer.key")
    results: dict[str, object] = {"threads": torch.get_num_threads(), "data": str(args.data)}
    t0 = time.perf_counter()
    default = build_backbone()  # the default bundle's backbone: what the hub embeds imports with
    names = parse_backbones(chosen_backbones(args, DEFAULT_QUICK_BACKBONES))
    members = [default if n == default.name else build_backbone(n) for n in names]
    backbone = stack_backbones(members, args.view, args.pooling)
    results["backbone_load_s"] = round(time.perf_counter() - t0, 2)
    results["backbone"], results["view"], results["pooling"] = backbone.name, args.view, args.pooling
    results["preprocessing"] = backbone.preprocessing.model_dump()
    print(
        f"quick recipe: {backbone.name}, view {args.view}, pooling {args.pooling}, "
        f"input {backbone.preprocessing.size} px, embedding {backbone.embedding_dim}-d",
        flush=True,
    )
    train = load_folder(args.data / "train")
    val_dir = args.data / "validation"
    print(f"train: {len(train.samples)} images, {len(train.classes)} classes; torch threads {torch.get_num_threads()}")
    options = QuickOptions()

    cold_cache: Path | None = None
    if not cache_holds(backbone, train):
        cold_cache = CACHE  # first run: the cold run fills the bench cache
    elif args.cold:
        cold_cache = tmp / "cold-cache"
    if cold_cache is not None:
        cold_s, _ = timed_bundle(train, work / "bundle", backbone, seed, cold_cache, options)
        results["cold_s"] = round(cold_s, 1)
        print(f"cold  (no cached embedding): signed bundle in {cold_s:.1f}s", flush=True)
    else:
        print("cold: not measured (embeddings cached; --cold measures it)", flush=True)

    warm_start = time.perf_counter()
    warm_data = load_folder(args.data / "train")  # listing + hashing the files is part of a warm job
    warm_s, outcome = timed_bundle(warm_data, work / "bundle", backbone, seed, CACHE, options)
    warm_total = time.perf_counter() - warm_start
    results["warm_s"] = round(warm_total, 1)
    results["warm_stages_s"] = {k: round(v, 1) for k, v in outcome.seconds.items()}
    results["oof_accuracy"] = outcome.quick.metrics["oof_accuracy"]
    print(
        f"warm  (embeddings cached):   signed bundle in {warm_total:.1f}s "
        f"(hash {warm_total - warm_s:.1f}s, {', '.join(f'{k} {v:.1f}s' for k, v in outcome.seconds.items())})",
        flush=True,
    )

    import_s, vectors = hub_vectors(train, default, seed, tmp / "default")
    if backbone.cache_key == default.cache_key:
        hub_s, hub_outcome = timed_bundle(train, tmp / "hub", backbone, seed, tmp / "empty-cache", options, vectors)
        ev_hub = evaluate_bundle(tmp / "hub", val_dir, public_key=hub_outcome.manifest.signer)
        results["hub_job"] = {
            "import_embedding_s": round(import_s, 1),
            "job_s": round(hub_s, 1),
            "reused": hub_outcome.manifest.metrics["embeddings_reused"],
            "stages_s": {k: round(v, 1) for k, v in hub_outcome.seconds.items()},
            "validation_accuracy": ev_hub.accuracy,
            "validation_balanced_accuracy": ev_hub.balanced_accuracy,
        }
        print(
            f"hub job (embeddings from the hub, empty trainer cache): signed bundle in {hub_s:.1f}s, "
            f"{hub_outcome.manifest.metrics['embeddings_reused']} vectors reused "
            f"(the hub spent {import_s:.1f}s embedding them as they were imported); validation {describe(ev_hub)}",
            flush=True,
        )
    else:  # the worker's rule (Worker.hub_recipe): the hub's vectors are the default bundle's recipe only
        results["hub_job"] = {"reused": 0, "why": f"recipe {backbone.cache_key} is not the hub's {default.cache_key}"}
        print(
            f"hub job: the hub's vectors ({default.name}, its own preprocessing) are not this recipe's; "
            "a hub job embeds itself (the cold time above)",
            flush=True,
        )

    ev = evaluate_bundle(work / "bundle", val_dir, public_key=outcome.manifest.signer)
    results["validation"] = {
        "accuracy": ev.accuracy,
        "balanced_accuracy": ev.balanced_accuracy,
        "images": ev.images,
        "flagged": ev.flagged,
        "flag_rate": ev.flag_rate,
        "flag_rate_of_misclassified": ev.flag_rate_wrong,
        "per_class_f1": {k: v.f1 for k, v in ev.per_class.items()},
        "eval_s": ev.seconds,
    }
    print(f"validation through the ONNX bundle: {describe(ev)}", flush=True)

    # What an agent pays per frame: this bundle vs the default lite0 bundle (one lite0 pass, as quick bundles were).
    frames = [decode_image(s.read()) for s in load_folder(val_dir).samples[:16]]
    rate = agent_rate(work / "bundle", frames, 1.0 if args.smoke else args.agent_seconds)
    rate_lite0 = agent_rate(tmp / "default", frames, 1.0 if args.smoke else args.agent_seconds)
    results["agent_img_s"] = {"bundle": round(rate, 2), "lite0_default": round(rate_lite0, 2)}
    print(
        f"agent images/s at batch 1 (ClassifierRuntime.classify): {rate:.1f} for this bundle vs {rate_lite0:.1f} "
        f"for the lite0 default bundle ({rate / rate_lite0:.2f}x)",
        flush=True,
    )

    keep = [train.classes[s.class_index] not in LEFT_OUT for s in train.samples]
    kept = train.subset(keep)
    classes = [c for c in train.classes if c not in LEFT_OUT]
    relabel = {train.classes.index(c): i for i, c in enumerate(classes)}
    partial = LabeledSet(classes, [replace(s, class_index=relabel[s.class_index]) for s in kept.samples])
    _, partial_outcome = timed_bundle(partial, tmp / "partial", backbone, seed, CACHE, options)
    ev_unseen = evaluate_bundle(tmp / "partial", val_dir, public_key=partial_outcome.manifest.signer)
    results["unseen"] = {
        "left_out": list(LEFT_OUT),
        "known_flag_rate": ev_unseen.flag_rate,
        "known_accuracy": ev_unseen.accuracy,
        "unseen": {
            u.name: {"images": u.images, "flagged": u.flagged, "flag_rate": u.flag_rate, "called": u.predicted_as}
            for u in ev_unseen.unseen
        },
    }
    print(f"trained without {' and '.join(LEFT_OUT)}: {describe(ev_unseen)}", flush=True)

    val = known_classes(load_folder(val_dir), train.classes)
    if not args.skip_ablation:
        embed_samples(backbone, val.samples, FeatureCache(CACHE, backbone.cache_key), CPU)
        print("ablation (each on the cached embeddings; CV = 5-fold on train/, validation = validation/):")
        results["ablation"] = ablation(backbone, train, val)

    tp = embedding_throughput(backbone, val.samples[: args.throughput_images], tmp, 1.0 if args.smoke else 10.0)
    results["embedding_throughput"] = tp
    print(
        f"embedding throughput: {tp['pipeline_img_s']:.1f} img/s (decode + preprocess + image & mirror forward) "
        f"vs raw forward {tp['raw_forward_img_s']:.1f} img/s at batch {DEFAULT_BATCH}: ratio {tp['ratio']:.2f}",
        flush=True,
    )

    out = args.json or work / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"figures written to {out}")


if __name__ == "__main__":
    sys.exit(main())
