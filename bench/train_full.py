"""Full-mode training on the shared clothing set: the whole job through `train_full_bundle`, its training
throughput against the raw forward+backward+AdamW-step rate of the same model and batch (measured in the same run,
before and after), and the exported bundle's accuracy on `validation/` (FP32 and, when kept, INT8).

    python bench/train_full.py [--epochs 2] [--per-class 60] [--image-size 224] [--batch-size 32] [--json FILE]
    python bench/train_full.py --smoke   # the tests' carried images: 1 epoch, 8 per class, 96 px, on the CPU

`--per-class N` trains on the first N images of every class of `train/` (0: all 3,068); accuracy is always
measured on the whole `validation/` folder, which training never sees (the job splits its own validation set
off `train/` for early stopping and calibration).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED_DATA, SMOKE_DATA, require_shared  # noqa: E402

from camfleet_contract.images import decode_image  # noqa: E402
from camfleet_contract.runtime import ClassifierRuntime  # noqa: E402
from camfleet_contract.signing import load_or_create_key  # noqa: E402
from camfleet_trainer.backbone import Backbone, build_backbone, configure_threads, resolve_device  # noqa: E402
from camfleet_trainer.data import LabeledSet, load_folder  # noqa: E402
from camfleet_trainer.export import BundleModel  # noqa: E402
from camfleet_trainer.full import CPU_BATCH, GPU_BATCH, FullOptions  # noqa: E402
from camfleet_trainer.full_bundle import FullBundleOptions, train_full_bundle  # noqa: E402
from camfleet_trainer.pipeline import BundleTarget  # noqa: E402
from camfleet_trainer.progress import EpochStats, Estimate, FullHooks  # noqa: E402
from camfleet_trainer.report import format_report  # noqa: E402

DATA = SHARED_DATA / "clothing"
WORK = REPO / "var" / "bench-train-full"


def raw_rate(backbone: Backbone, classes: int, batch: int, size: int, device: torch.device, steps: int) -> float:
    """Images/s of bare training steps of the same model, batch and precision: a fixed tensor already on the
    device, no data loading, no augmentation, no evaluation."""
    model = copy.deepcopy(backbone.model).requires_grad_(True)
    tuned = copy.copy(backbone)
    tuned.model = model
    module = BundleModel(tuned, nn.Linear(backbone.embedding_dim, classes)).to(
        device, memory_format=torch.channels_last
    )
    module.train()
    for m in module.modules():  # as the job trains: batch norms keep their pretrained statistics (FullOptions)
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and FullOptions().freeze_bn:
            m.eval()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=device.type == "cuda")
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    cuda = device.type == "cuda"

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits, _ = module(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def subset(data: LabeledSet, per_class: int) -> LabeledSet:
    if per_class <= 0:
        return data
    seen: dict[int, int] = {}
    keep = []
    for s in data.samples:
        seen[s.class_index] = seen.get(s.class_index, 0) + 1
        keep.append(seen[s.class_index] <= per_class)
    return data.subset(keep)


def accuracy(bundle: Path, validation: Path, classes: list[str], int8: bool) -> tuple[float, int]:
    """Top-1 accuracy of the bundle (through the contract runtime, as agents run it) on validation/."""
    runtime = ClassifierRuntime(bundle, prefer_int8=int8)
    correct = total = 0
    for label in classes:
        files = sorted((validation / label).iterdir())
        for start in range(0, len(files), 32):
            images = [decode_image(f.read_bytes()) for f in files[start : start + 32]]
            correct += sum(r.label == label for r in runtime.classify(images))
            total += len(images)
    return correct / total, total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--per-class", type=int, default=0, help="images per class from train/ (0: all)")
    p.add_argument("--image-size", type=int, default=None, help="default: the backbone's own (224)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 32 on CPU, 64 on a GPU")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--raw-steps", type=int, default=5, help="timed steps of the raw baseline, before and after")
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--smoke", action="store_true", help="the tests' carried images, 1 epoch, 8 per class, 96 px, CPU")
    args = p.parse_args()
    data_dir = DATA
    if args.smoke:
        data_dir = SMOKE_DATA / "clothing"
        args.epochs, args.per_class, args.image_size, args.batch_size = 1, 8, 96, 8
        args.device, args.raw_steps = "cpu", 1
    else:
        require_shared(DATA / "train", DATA / "validation")
    with tempfile.TemporaryDirectory(prefix="bench-train-full-") as tmp:
        # --smoke leaves var/bench-train-full (the real run's bundle and key) alone.
        run(args, data_dir, Path(tmp) if args.smoke else WORK)
    return 0


def run(args: argparse.Namespace, data_dir: Path, work: Path) -> None:
    configure_threads(None)
    device = resolve_device(args.device)
    backbone = build_backbone()
    data = subset(load_folder(data_dir / "train"), args.per_class)
    size = args.image_size or backbone.preprocessing.size
    batch = args.batch_size or (GPU_BATCH if device.type == "cuda" else CPU_BATCH)
    print(f"train/: {len(data.samples)} images in {len(data.classes)} classes; {size} px, batch {batch}, {device}")

    raw_before = raw_rate(backbone, len(data.classes), batch, size, device, args.raw_steps)
    print(f"raw forward+backward+step: {raw_before:.1f} images/s", flush=True)
    epochs: list[EpochStats] = []
    estimates: list[Estimate] = []

    def on_epoch(s: EpochStats) -> None:
        epochs.append(s)
        print(
            f"epoch {s.epoch}/{s.epochs}: {s.seconds:.0f} s, training {s.train_images_per_s:.1f} images/s, "
            f"loss {s.loss:.3f}, train acc {s.train_acc:.3f}, val acc {s.val_acc:.3f}",
            flush=True,
        )

    def on_estimate(e: Estimate) -> None:
        estimates.append(e)
        print(e.text(), flush=True)

    options = FullOptions(epochs=args.epochs, image_size=size, batch_size=batch)
    out = work / "bundle"
    start = time.perf_counter()
    outcome = train_full_bundle(
        data,
        backbone,
        BundleTarget(out, load_or_create_key(work / "bench.key"), classifier="clothes", overwrite=True, device=device),
        FullBundleOptions(options, FullHooks(estimate=on_estimate, epoch=on_epoch), int8=not args.no_int8),
    )
    wall = time.perf_counter() - start
    full = outcome.full
    assert full is not None
    raw_after = raw_rate(backbone, len(data.classes), batch, size, device, args.raw_steps)
    raw = (raw_before + raw_after) / 2
    print(format_report(outcome))

    train_rate = float(np.mean([e.train_images_per_s for e in epochs]))
    epoch_s = float(np.mean([e.seconds for e in epochs]))
    val_acc, n_val = accuracy(out, data_dir / "validation", outcome.classes, int8=False)
    int8_info = outcome.manifest.metrics.get("int8", {})
    int8_acc = (
        accuracy(out, data_dir / "validation", outcome.classes, int8=True)[0]
        if outcome.manifest.metrics.get("int8_ok")
        else None
    )
    results = {
        "device": device.type,
        "images": len(data.samples),
        "per_class": args.per_class,
        "image_size": size,
        "batch_size": full.metrics["batch_size"],
        "epochs_run": len(epochs),
        "seconds_per_epoch": round(epoch_s, 1),
        "train_images_per_s": round(train_rate, 2),
        "raw_images_per_s": round(raw, 2),
        "raw_before_after": [round(raw_before, 2), round(raw_after, 2)],
        "ratio": round(train_rate / raw, 3),
        "estimate_s": round(estimates[0].total_s, 1) if estimates else None,
        "wall_s": round(wall, 1),
        "split_val_accuracy": full.metrics["val_accuracy"],
        "validation_accuracy": round(val_acc, 4),
        "validation_images": n_val,
        "int8": int8_info,
        "int8_validation_accuracy": None if int8_acc is None else round(int8_acc, 4),
    }
    print()
    print(f"training {train_rate:.2f} images/s / raw {raw:.2f} images/s = ratio {results['ratio']:.2f}")
    print(f"{epoch_s:.0f} s per epoch; whole job {wall:.0f} s (estimated {results['estimate_s']} s)")
    print(f"validation/ accuracy {val_acc:.4f} on {n_val} images (FP32)", end="")
    print("" if int8_acc is None else f", INT8 {int8_acc:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
