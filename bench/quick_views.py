"""Issue 16: which image views and which head lift the quick model, measured by 5-fold CV on clothing train/
and reported on validation/ (nothing else is looked at).

    python bench/quick_views.py embed [--views std,full,squash] [--backbones lite0,lite1,lite2]   # cached, minutes
    python bench/quick_views.py ablate [--json var/bench-views/ablation.json]
    python bench/quick_views.py ablate --backbones lite0,lite1,lite2 --views std,full   # backbones and their stacks
    python bench/quick_views.py --smoke     # both steps on the tests' carried images: does every part still run

A *view* is one way to turn a photo into the backbone's square input, each also mirrored:
  std     the contract's default: shorter side to 256, centre 224 crop (what bundles use today)
  full    the whole shorter side as the square (resize = size): less of the photo cut away
  squash  the whole photo resized to 224 x 224, aspect ratio not kept: nothing cut away
  pad     the whole photo padded to a square with mid-grey, then 224 x 224
Features are cached under var/bench-views/<backbone>/<view>/<split>.npz (git-ignored). Backbone rows (--backbones)
are what quick mode ships (stack.py): each backbone's unit features of the image side by side, the mirror image's
as extra training rows, the image alone at inference.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED_DATA, require_shared  # noqa: E402

from camfleet_contract.images import Preprocessing, decode_image, normalise, preprocess  # noqa: E402
from camfleet_trainer.backbone import Backbone, build_backbone, configure_threads  # noqa: E402
from camfleet_trainer.data import LabeledSet, load_folder  # noqa: E402
from camfleet_trainer.embed import compute_features  # noqa: E402
from camfleet_trainer.head import DEFAULT_L2, fit_head  # noqa: E402
from camfleet_trainer.oof import stratified_folds  # noqa: E402

DATA = SHARED_DATA / "clothing"
OUT = REPO / "var" / "bench-views"
CPU = torch.device("cpu")
SPLITS = ("train", "validation")
BATCH = 32
# Short names for --backbones; any timm name with packaged weights works too.
BACKBONES = {f"lite{i}": f"tf_efficientnet_lite{i}" for i in range(5)}


def _whole(img: np.ndarray, spec: Preprocessing, pad: bool) -> np.ndarray:
    if pad:
        h, w = img.shape[:2]
        side = max(h, w)
        canvas = np.full((side, side, 3), 128, dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top : top + h, left : left + w] = img
        img = canvas
    resized = cv2.resize(img, (spec.size, spec.size), interpolation=cv2.INTER_AREA)
    return normalise(resized, spec)


def view_fn(view: str, spec: Preprocessing) -> Callable[[np.ndarray], np.ndarray]:
    """RGB image → (3, S, S) float32 for the named view."""
    if view == "std":
        return lambda img: preprocess(img, spec)
    if view == "full":
        full = spec.model_copy(update={"resize": spec.size})
        return lambda img: preprocess(img, full)
    if view == "squash":
        return lambda img: _whole(img, spec, pad=False)
    if view == "pad":
        return lambda img: _whole(img, spec, pad=True)
    raise SystemExit(f"unknown view {view!r}")


def view_path(backbone: Backbone, view: str, split: str) -> Path:
    return OUT / backbone.cache_key / view / f"{split}.npz"


def embed_view(backbone: Backbone, data: LabeledSet, view: str, path: Path) -> None:
    """(N, 2, D) features (image, mirror) of every sample, with labels and hashes, into one .npz."""
    fn = view_fn(view, backbone.preprocessing)
    feats: list[np.ndarray] = []
    start = time.perf_counter()
    for i in range(0, len(data.samples), BATCH):
        chunk = data.samples[i : i + BATCH]
        batch = np.stack([fn(decode_image(s.read())) for s in chunk])
        image, mirror = compute_features(backbone, batch, CPU)
        feats.append(np.stack([image, mirror], axis=1))
        done = i + len(chunk)
        took = time.perf_counter() - start
        print(f"\r  {backbone.name} {view} {path.stem}: {done}/{len(data.samples)} ({took:.0f}s)", end="")
    print(flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        features=np.concatenate(feats).astype(np.float32),
        labels=np.array([s.class_index for s in data.samples]),
        sha256=np.array([s.sha256 for s in data.samples]),
        classes=np.array(data.classes),
    )


def load_view(backbone: Backbone, view: str, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features (N, 2, D), labels (N,), classes) of a cached view."""
    with np.load(view_path(backbone, view, split)) as z:
        return z["features"], z["labels"], [str(c) for c in z["classes"]]


def cmd_embed(args: argparse.Namespace) -> None:
    splits = {s: load_folder(args.data / s) for s in SPLITS}
    for name in args.backbones.split(","):
        backbone = build_backbone(BACKBONES.get(name, name)).to(CPU)
        for view in args.views.split(","):
            for split, data in splits.items():
                path = view_path(backbone, view, split)
                if path.exists():
                    print(f"  {backbone.name} {view} {split}: cached")
                    continue
                embed_view(backbone, data, view, path)


def smoke() -> None:
    """Both steps on the tests' carried images (15 training and 5 validation images of each of three classes, two
    views, the variants they allow), in a temporary folder."""
    global OUT
    with tempfile.TemporaryDirectory(prefix="quick-views-") as tmp:
        root = Path(tmp)
        for folder in sorted((REPO / "tests" / "data" / "clothing" / "train").iterdir()):
            files = sorted(folder.iterdir())
            for split, part in (("train", files[:15]), ("validation", files[15:])):
                (root / "data" / split / folder.name).mkdir(parents=True)
                for f in part:
                    (root / "data" / split / folder.name / f.name).symlink_to(f)
        OUT = root / "views"
        cmd_embed(argparse.Namespace(data=root / "data", views="std,squash", backbones="lite0"))
        only = ["today", "std ⊕ squash concatenated"]
        ablate = dict(json=OUT / "ablation.json", base="", l2=[], no_standardize=False, mlp=False, only=only)
        cmd_ablate(argparse.Namespace(data=root / "data", backbones="", views="", **ablate))
        stacks = dict(ablate, json=OUT / "stacks.json", only=[])
        cmd_ablate(argparse.Namespace(data=root / "data", backbones="lite0", views="std,squash", **stacks))


def main() -> int:
    if "--smoke" in sys.argv[1:]:
        configure_threads(None)
        smoke()
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--smoke", action="store_true", help="a minute on the tests' carried images")
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed")
    e.add_argument("--views", default="std,full,squash")
    e.add_argument("--backbones", default="lite0", help="comma-separated: lite0,lite1,lite2 or timm names")
    a = sub.add_parser("ablate")
    a.add_argument("--json", type=Path, default=OUT / "ablation.json")
    a.add_argument("--base", default="", help="variant whose head is varied (default: all four views)")
    a.add_argument("--l2", type=float, nargs="*", default=[], help="L2 strengths to try on the base")
    a.add_argument("--no-standardize", action="store_true")
    a.add_argument("--mlp", action="store_true", help="also a small MLP head")
    a.add_argument("--only", nargs="*", default=[], help="run only the variants whose name contains one of these")
    a.add_argument(
        "--backbones", default="", help="comma-separated: every backbone alone and every concatenation of them instead"
    )
    a.add_argument("--views", default="std,full", help="with --backbones: the views to try each combination on")
    g = sub.add_parser("agent", help="images/s at batch 1 of each stack's bundle through the contract runtime")
    g.add_argument("--backbones", default="lite0,lite1,lite2")
    g.add_argument("--view", default="full")
    g.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    require_shared(*(args.data / s for s in SPLITS))
    configure_threads(None)
    if args.cmd == "embed":
        cmd_embed(args)
    elif args.cmd == "agent":
        cmd_agent(args)
    else:
        cmd_ablate(args)
    return 0


def cmd_agent(args: argparse.Namespace) -> None:
    """What each stack costs an agent: `ClassifierRuntime.classify` of one frame at a time (preprocessing, ONNX
    Runtime, scores) on validation photos, for a bundle of every combination (the head does not change the cost)."""
    from camfleet_contract.anomaly import AnomalyCalibration
    from camfleet_contract.runtime import ClassifierRuntime
    from camfleet_contract.signing import generate_signing_key
    from camfleet_trainer.export import write_bundle
    from camfleet_trainer.head import LinearHead
    from camfleet_trainer.stack import parse_backbones, stack_backbones

    frames = [decode_image(s.read()) for s in load_folder(args.data / "validation").samples[::20]]
    built = {n: build_backbone(n) for n in parse_backbones(args.backbones)}
    seed = generate_signing_key()
    rows = []
    with tempfile.TemporaryDirectory(prefix="quick-agent-") as tmp:
        for r in range(1, len(built) + 1):
            for combo in itertools.combinations(built, r):
                bb = stack_backbones([built[n] for n in combo], args.view)
                head = LinearHead(np.zeros((2, bb.embedding_dim), np.float32), np.zeros(2, np.float32))
                out = Path(tmp) / bb.cache_key
                calibration = AnomalyCalibration(method="confidence", threshold=0.5, temperature=1.0)
                write_bundle(out, bb, ["a", "b"], calibration, seed, frames[:2], head=head)
                runtime = ClassifierRuntime(out)
                runtime.classify(frames[:1])
                done, start = 0, time.perf_counter()
                while done < 3 or time.perf_counter() - start < args.seconds:
                    runtime.classify([frames[done % len(frames)]])
                    done += 1
                rate = done / (time.perf_counter() - start)
                rows.append((bb.name, bb.preprocessing.size, rate))
                print(f"  {bb.name:<70} {bb.preprocessing.size} px  {rate:6.1f} images/s", flush=True)
    base = rows[0][2]
    for name, _, rate in rows:
        print(f"  {name:<70} {rate / base:.2f}x of {rows[0][0]}")


@dataclass(frozen=True)
class Recipe:
    """How features are built from the cached views and which head reads them.

    views: the views whose embeddings (image and mirror each) are used: "std" (lite0) or "lite1/full".
    train: "rows" = every view and mirror a training row of its own (augmentation); "mean" = one row per image,
           the unit mean of its views' unit embeddings.
    infer: "image" = the first view's un-mirrored embedding only (today's bundle); "mean" = the unit mean of
           every view's image and mirror embeddings; "concat" = the per-view flip-means side by side; "stack" =
           the per-view image embeddings side by side (what a stacked bundle runs: no mirror at inference).
    """

    views: tuple[str, ...] = ("std",)
    train: str = "rows"
    infer: str = "image"
    mirror_train: bool = True
    l2: float = DEFAULT_L2
    standardize: bool = True
    head: str = "linear"  # or "mlp"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _key(view: str) -> str:
    """A cached feature set's name: "lite1/full"; a bare view name is lite0's (the rows measured first)."""
    return view if "/" in view else f"lite0/{view}"


def build(recipe: Recipe, feats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(training rows (N, R, D'), inference features (N, D')) for one split; R rows per image."""
    parts = [_unit(feats[_key(v)]) for v in recipe.views]  # (N, 2, D_v) each
    n = len(parts[0])
    if recipe.infer == "stack":
        image = np.concatenate([p[:, 0] for p in parts], axis=1)
        rows = image[:, None, :]
        if recipe.mirror_train:
            rows = np.stack([image, np.concatenate([p[:, 1] for p in parts], axis=1)], axis=1)
        return rows, image
    stacked = np.stack(parts, axis=1)  # (N, V, 2, D)
    if recipe.infer == "concat":
        per_view = _unit(stacked.mean(axis=2))  # (N, V, D)
        infer = per_view.reshape(n, -1)
        rows = infer[:, None, :]
        if recipe.mirror_train:
            rows = np.stack([stacked[:, :, 0].reshape(n, -1), stacked[:, :, 1].reshape(n, -1)], axis=1)
        return rows, infer
    infer = stacked[:, 0, 0] if recipe.infer == "image" else _unit(stacked.reshape(n, -1, stacked.shape[-1]).mean(1))
    if recipe.train == "mean":
        return infer[:, None, :], infer
    rows = stacked if recipe.mirror_train else stacked[:, :, :1]
    return rows.reshape(n, -1, stacked.shape[-1]), infer


def fit_predict(recipe: Recipe, rows: np.ndarray, y: np.ndarray, test: np.ndarray, num_classes: int) -> np.ndarray:
    """Logits of `test` from a head fitted on every row of `rows`."""
    n, r, d = rows.shape
    x, yy = rows.reshape(n * r, d), np.repeat(y, r)
    if recipe.head == "mlp":
        return fit_mlp(x, yy, test, num_classes, recipe.l2)
    head = fit_head(x, yy, num_classes, recipe.l2, recipe.standardize)
    return head.logits(test)


def fit_mlp(x: np.ndarray, y: np.ndarray, test: np.ndarray, num_classes: int, wd: float) -> np.ndarray:
    """A one-hidden-layer MLP (512, dropout 0.5) on standardized unit features: AdamW, 60 epochs, balanced."""
    torch.manual_seed(0)
    xt = torch.from_numpy(_unit(x).astype(np.float32))
    mean, std = xt.mean(0), xt.std(0).clamp_min(1e-6)
    xs = (xt - mean) / std
    yt = torch.from_numpy(y.astype(np.int64))
    net = torch.nn.Sequential(
        torch.nn.Dropout(0.2),
        torch.nn.Linear(x.shape[1], 512),
        torch.nn.GELU(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(512, num_classes),
    )
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    weight = torch.from_numpy(len(y) / (num_classes * np.maximum(counts, 1))).float()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=wd)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1)
    epochs, batch = 60, 256
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=epochs * ((len(y) + batch - 1) // batch))
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(y), generator=gen).split(batch):
            opt.zero_grad()
            loss_fn(net(xs[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        t = (torch.from_numpy(_unit(test).astype(np.float32)) - mean) / std
        return net(t).double().numpy()


def score(
    recipe: Recipe,
    train: dict[str, np.ndarray],
    y: np.ndarray,
    val: dict[str, np.ndarray],
    yv: np.ndarray,
    num_classes: int,
) -> dict[str, float]:
    """5-fold CV accuracy on train/ (what a choice is made on) and validation/ accuracy of the head on all of
    train/ (what is reported)."""
    rows, infer = build(recipe, train)
    folds, k = stratified_folds(y, 5, 0)
    oof = np.zeros((len(y), num_classes))
    for f in range(k):
        tr = folds != f
        oof[~tr] = fit_predict(recipe, rows[tr], y[tr], infer[~tr], num_classes)
    _, val_infer = build(recipe, val)
    val_logits = fit_predict(recipe, rows, y, val_infer, num_classes)
    return {
        "cv_accuracy": round(float((oof.argmax(1) == y).mean()), 4),
        "val_accuracy": round(float((val_logits.argmax(1) == yv).mean()), 4),
    }


VARIANTS: list[tuple[str, Recipe]] = [
    ("today: std, mirror rows, image at inference", Recipe()),
    ("std, no mirror rows", Recipe(mirror_train=False)),
    ("std + flip at inference", Recipe(infer="mean")),
    ("full, mirror rows, image at inference", Recipe(views=("full",))),
    ("full + flip at inference", Recipe(views=("full",), infer="mean")),
    ("squash + flip at inference", Recipe(views=("squash",), infer="mean")),
    ("pad + flip at inference", Recipe(views=("pad",), infer="mean")),
    ("std+squash rows, mean at inference", Recipe(views=("std", "squash"), infer="mean")),
    ("std+full rows, mean at inference", Recipe(views=("std", "full"), infer="mean")),
    ("squash+pad rows, mean at inference", Recipe(views=("squash", "pad"), infer="mean")),
    ("all four views, mean at inference", Recipe(views=("std", "full", "squash", "pad"), infer="mean")),
    ("std+squash mean embedding (train = infer)", Recipe(views=("std", "squash"), train="mean", infer="mean")),
    ("std ⊕ squash concatenated", Recipe(views=("std", "squash"), infer="concat")),
    ("std ⊕ squash concatenated (train = infer)", Recipe(views=("std", "squash"), infer="concat", mirror_train=False)),
    ("std ⊕ full concatenated", Recipe(views=("std", "full"), infer="concat")),
    ("full ⊕ squash concatenated", Recipe(views=("full", "squash"), infer="concat")),
    ("std ⊕ full ⊕ squash concatenated", Recipe(views=("std", "full", "squash"), infer="concat")),
    ("std ⊕ full ⊕ squash ⊕ pad concatenated", Recipe(views=("std", "full", "squash", "pad"), infer="concat")),
]


def backbone_variants(backbones: list[str], views: list[str]) -> list[tuple[str, Recipe]]:
    """Every backbone alone and every concatenation of two or more, per view, as quick mode would ship them."""
    out = []
    for view in views:
        for r in range(1, len(backbones) + 1):
            for combo in itertools.combinations(backbones, r):
                name = " ⊕ ".join(combo) + f" ({view})"
                out.append((name, Recipe(views=tuple(f"{b}/{view}" for b in combo), infer="stack")))
    return out


def load_features(keys: set[str], split: str) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Cached features by key ("lite1/full") of those embedded, with the split's labels and classes."""
    feats: dict[str, np.ndarray] = {}
    labels, classes = np.zeros(0), []
    built: dict[str, Backbone] = {}
    for key in sorted(keys):
        short, view = key.split("/")
        if short not in built:
            built[short] = build_backbone(BACKBONES.get(short, short))
        if view_path(built[short], view, split).exists():
            feats[key], labels, classes = load_view(built[short], view, split)
    return feats, labels, classes


def cmd_ablate(args: argparse.Namespace) -> None:
    extras = extra_variants(args)
    if args.backbones:
        variants = backbone_variants(args.backbones.split(","), args.views.split(","))
    else:
        variants = VARIANTS + extras
    keys = {_key(v) for _, r in variants for v in r.views}
    tr, y, classes = load_features(keys, "train")
    va, yv, vclasses = load_features(keys, "validation")
    assert classes == vclasses, (classes, vclasses)
    rows = []
    for name, recipe in variants:
        if args.only and (name, recipe) not in extras and not any(o in name for o in args.only):
            continue
        missing = {_key(v) for v in recipe.views} - (set(tr) & set(va))
        if missing:
            print(f"  {name:<48} skipped ({', '.join(sorted(missing))} not embedded)")
            continue
        start = time.perf_counter()
        s = score(recipe, tr, y, va, yv, len(classes))
        rows.append({"variant": name, **s, "recipe": asdict(recipe), "seconds": round(time.perf_counter() - start, 1)})
        print(f"  {name:<48} CV {s['cv_accuracy']:.4f}   validation {s['val_accuracy']:.4f}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))


def extra_variants(args: argparse.Namespace) -> list[tuple[str, Recipe]]:
    """Head variants on the recipe named by --base (default: all four views, mean at inference)."""
    base = dict(VARIANTS)[args.base] if args.base else Recipe(views=("std", "full", "squash", "pad"), infer="mean")
    out = [(f"  l2 = {l2:g}", replace(base, l2=l2)) for l2 in args.l2]
    if args.no_standardize:
        out.append(("  no standardization", replace(base, standardize=False)))
    if args.mlp:
        out += [(f"  MLP head, weight decay {wd:g}", replace(base, head="mlp", l2=wd)) for wd in (0.01, 0.1)]
    return out


if __name__ == "__main__":
    sys.exit(main())
