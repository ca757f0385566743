"""Command line: `camfleet-agent run --config agent.toml` and `camfleet-agent classify --bundle DIR IMAGE...`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from . import __version__

EXIT_OK = 0
EXIT_IMAGE_ERRORS = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camfleet-agent",
        description="camfleet edge agent: capture camera frames, classify them locally, publish over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the agent: capture, classify, publish (Ctrl-C stops it cleanly)",
        description="Run the agent described by a TOML config file; CAMFLEET_AGENT__SECTION__KEY=value "
        "environment variables override the file (e.g. CAMFLEET_AGENT__MQTT__HOST=broker).",
    )
    run.add_argument("--config", "-c", type=Path, required=True, metavar="FILE", help="agent TOML config file")

    classify = sub.add_parser(
        "classify",
        help="classify image files with a model bundle, offline",
        description="Classify image files with an unpacked model bundle. Prints one line per image; exits 1 "
        "when any image could not be read (the others are still classified).",
    )
    classify.add_argument("--bundle", "-b", type=Path, required=True, metavar="DIR", help="unpacked bundle folder")
    classify.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files to classify")
    classify.add_argument("--json", action="store_true", help="print one JSON object per image (JSON lines)")
    classify.add_argument(
        "--public-key",
        metavar="HEX",
        default=None,
        help="trusted ed25519 public key the bundle must be signed with (default: the key the bundle names, "
        "which only proves the bundle is intact, not who made it)",
    )
    classify.add_argument("--top-k", type=int, default=5, metavar="N", help="predictions per image (default 5)")
    classify.add_argument(
        "--fp32",
        action="store_true",
        help="run the FP32 model even when the hub signed INT8 for the bundle (default: the signed precision, as "
        "the agent and the hub run it; INT8 when vouched for if the bundle names none)",
    )
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request is noise here


def cmd_run(args: argparse.Namespace) -> int:
    from camfleet_contract.config import ConfigError

    from .app import Agent
    from .capture import CaptureError
    from .config import load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"camfleet-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    agent = Agent(settings)
    try:
        agent.start()
    except CaptureError as exc:
        print(f"camfleet-agent: camera configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        while not stop.wait(1.0):
            pass
    finally:
        agent.stop()
    return EXIT_OK


def _table_row(path: str, label: str, prob: str, anomaly: str, score: str, version: str) -> str:
    return f"{path:<40} {label:<24} {prob:>8} {anomaly:>7} {score:>8} {version}"


def cmd_classify(args: argparse.Namespace) -> int:
    from camfleet_contract.bundle import BundleError, read_precision
    from camfleet_contract.images import ImageError, decode_image
    from camfleet_contract.runtime import ClassifierRuntime

    if args.top_k < 1:
        print(f"camfleet-agent: --top-k={args.top_k} must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.public_key is None:
        print(
            "camfleet-agent: warning: no --public-key given; the bundle is checked against the key it names "
            "itself, not against a trusted key",
            file=sys.stderr,
        )
    signed = read_precision(args.bundle)
    prefer_int8 = not args.fp32 and signed != "fp32"
    try:
        runtime = ClassifierRuntime(args.bundle, public_key=args.public_key, top_k=args.top_k, prefer_int8=prefer_int8)
    except BundleError as exc:
        print(f"camfleet-agent: bundle {args.bundle} rejected: {exc}", file=sys.stderr)
        return EXIT_USAGE
    failed = 0
    if not args.json:
        print(_table_row("path", "label", "prob", "anomaly", "score", "model"))
    for path in args.images:
        try:
            rgb = decode_image(path.read_bytes())
        except (OSError, ImageError) as exc:
            failed += 1
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if args.json:
                print(json.dumps({"path": str(path), "error": reason}), flush=True)
            else:
                print(f"{str(path):<40} error: {reason}", flush=True)
            continue
        result = runtime.classify([rgb])[0]
        if args.json:
            record = {
                "path": str(path),
                **result.as_dict(),
                "latency_ms": result.latency_ms,
                "classifier": runtime.manifest.classifier,
                "model_version": runtime.version,
                "model_file": runtime.model_file,
            }
            print(json.dumps(record), flush=True)
        else:
            print(
                _table_row(
                    str(path),
                    result.label,
                    f"{result.probability:.3f}",
                    "yes" if result.anomaly else "no",
                    f"{result.anomaly_score:.3f}",
                    f"{runtime.manifest.classifier}/{runtime.version}",
                ),
                flush=True,
            )
    return EXIT_IMAGE_ERRORS if failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.log_level)
    if args.command == "run":
        return cmd_run(args)
    return cmd_classify(args)


if __name__ == "__main__":
    sys.exit(main())
