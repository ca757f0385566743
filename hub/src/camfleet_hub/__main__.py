"""Command line of the hub: ``camfleet-hub serve|ingest|migrate|demo`` (also ``python -m camfleet_hub``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

log = logging.getLogger("camfleet_hub")

EXIT_CONFIG = 2
EXIT_START = 3
QUIET_LOGGERS = ("transitions", "amqtt", "alembic")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="hub TOML config (optional; every key can also be set as CAMFLEET_HUB__SECTION__KEY=value)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree; one subcommand per way of running the hub."""
    parser = argparse.ArgumentParser(
        prog="camfleet-hub",
        description="camfleet hub: REST API + web UI, MQTT frame ingest, datasets, model registry and job queue.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run everything: database, store, embedded broker, ingest, HTTP API + web UI")
    _add_config(p)
    p.add_argument("--no-ingest", action="store_true", help="do not run the ingest worker in this process")

    p = sub.add_parser("ingest", help="run only the MQTT frame ingest worker (no HTTP, no embedded broker)")
    _add_config(p)

    p = sub.add_parser("migrate", help="create or upgrade the database schema, then exit")
    _add_config(p)

    p = sub.add_parser("demo", help="the one-command demo: hub + trainer + an edge agent on embedded defaults")
    try:
        from camfleet_hub import demo

        add_arguments = getattr(demo, "add_arguments", None)
        if add_arguments is not None:
            add_arguments(p)
    except ImportError:
        pass
    return parser


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from camfleet_contract.config import ConfigError
    from camfleet_hub.config import load_settings

    try:
        return load_settings(args.config)
    except ConfigError as exc:
        print(f"camfleet-hub: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _run_until_signal(
    args: argparse.Namespace, *, http: bool, ingest: bool | None, broker: bool | None = None, publisher: bool = True
) -> int:
    """Start the hub parts, wait for Ctrl-C / SIGTERM, stop cleanly."""
    from camfleet_hub.app import Hub, HubStartError

    settings = _load(args)
    hub = Hub(settings, http=http, ingest=ingest, broker=broker, publisher=publisher)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        hub.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            hub.start()
        except (HubStartError, OSError) as exc:
            log.error("hub could not start: %s", exc)
            return EXIT_START
        if http:
            print(f"camfleet hub running at {hub.url}  (Ctrl-C to stop)", flush=True)
        else:
            print(f"camfleet hub ingest running against mqtt {settings.mqtt.host}:{settings.mqtt.port}", flush=True)
        hub.wait()
        return 0
    finally:
        hub.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``camfleet-hub`` and ``python -m camfleet_hub``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        for noisy in QUIET_LOGGERS:  # state-machine and plugin chatter at INFO
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "serve":
        return _run_until_signal(args, http=True, ingest=False if args.no_ingest else None)
    if args.command == "ingest":
        return _run_until_signal(args, http=False, ingest=True, broker=False, publisher=False)
    if args.command == "migrate":
        from camfleet_hub.db.session import make_engine, migrate

        settings = _load(args)
        engine = make_engine(settings.db_url())
        try:
            migrate(engine)
        finally:
            engine.dispose()
        print(f"database schema is up to date: {engine.url.render_as_string(hide_password=True)}")
        return 0
    if args.command == "demo":
        from camfleet_hub import demo

        return int(demo.main(args) or 0)
    raise AssertionError(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
