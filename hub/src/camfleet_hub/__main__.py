"""Command line of the hub: ``camfleet-hub serve|ingest|migrate|backup|restore|demo|user|token|mqtt``
(also ``python -m camfleet_hub``).

``user`` and ``token`` work on the configured database directly (no running hub needed), e.g.::

    camfleet-hub user create alice --role shop=labeller      # asks for the password
    camfleet-hub user passwd admin
    camfleet-hub token create --site shop --role viewer --name agent1   # prints the secret once
    camfleet-hub mqtt create --site shop --agent pi-1     # the agent's MQTT username and password, shown once
    camfleet-hub mqtt create --site shop --agent pi-1 --password-env PI1_MQTT_PASSWORD   # idempotent, for deploys
    camfleet-hub mqtt revoke agent/shop/pi-1
    camfleet-hub mqtt export-mosquitto --out /etc/mosquitto/camfleet   # then: kill -HUP <mosquitto>
    camfleet-hub mqtt export-mosquitto --out /etc/mosquitto/camfleet --watch --pid-file /run/mosquitto/mosquitto.pid
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from camfleet_hub import __version__

log = logging.getLogger("camfleet_hub")

EXIT_CONFIG = 2
EXIT_START = 3


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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default: log.level of the config, INFO)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run everything: database, store, embedded broker, ingest, HTTP API + web UI")
    _add_config(p)
    p.add_argument("--no-ingest", action="store_true", help="do not run the ingest worker in this process")

    p = sub.add_parser("ingest", help="run only the MQTT frame ingest worker (no HTTP, no embedded broker)")
    _add_config(p)

    p = sub.add_parser("migrate", help="create or upgrade the database schema, then exit")
    _add_config(p)

    p = sub.add_parser("backup", help="copy the database, the object store and the fleet key into a new folder")
    _add_config(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new or empty folder")

    p = sub.add_parser("restore", help="load a backup into the empty database and store of --config")
    _add_config(p)
    p.add_argument("--from", dest="source", type=Path, required=True, metavar="DIR", help="a folder made by backup")

    _add_user_commands(sub)

    p = sub.add_parser("demo", help="the one-command demo: hub + trainer + an edge agent on embedded defaults")
    try:
        from camfleet_hub import demo

        add_arguments = getattr(demo, "add_arguments", None)
        if add_arguments is not None:
            add_arguments(p)
    except ImportError:
        pass
    return parser


def _add_user_commands(sub: Any) -> None:
    p = sub.add_parser("user", help="create a user or set a password, on the configured database")
    users = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    c = users.add_parser("create", help="add a user (password from --password-stdin or asked for)")
    _add_config(c)
    c.add_argument("username")
    c.add_argument("--admin", action="store_true", help="a hub administrator (every site, users)")
    c.add_argument("--role", action="append", default=[], metavar="SITE=ROLE", help="admin|labeller|viewer in a site")
    c.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    c = users.add_parser("passwd", help="set a user's password (logs the user out everywhere)")
    _add_config(c)
    c.add_argument("username")
    c.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    p = sub.add_parser("token", help="create an API token on the configured database (prints the secret once)")
    tokens = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    c = tokens.add_parser("create", help="a bearer token for an agent, trainer or script")
    _add_config(c)
    c.add_argument("--name", required=True, help="what it is for, e.g. agent1")
    c.add_argument("--site", default=None, help="the one site it may act in (default: every site)")
    c.add_argument("--role", default="viewer", choices=["admin", "labeller", "viewer"])
    c.add_argument("--user", default=None, help="owner (its rights cap the token's); default: none")

    p = sub.add_parser("mqtt", help="issue or revoke MQTT credentials on the configured database")
    accounts = p.add_subparsers(dest="mqtt_command", required=True, metavar="ACTION")
    c = accounts.add_parser("create", help="credentials for an agent or an observer (printed once)")
    _add_config(c)
    c.add_argument("--site", default=None, help="the site (an observer without one reads every site)")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--agent", help="the agent's name, as in its config")
    who.add_argument("--observer", help="a read-only consumer's name")
    c.add_argument(
        "--create-site",
        action="store_true",
        help="create --site when it does not exist yet (a deployment's first start)",
    )
    given = c.add_mutually_exclusive_group()
    given.add_argument(
        "--password-stdin", action="store_true", help="use the password on standard input (default: a random one)"
    )
    given.add_argument("--password-env", metavar="NAME", help="use the password in environment variable NAME")
    c = accounts.add_parser("revoke", help="revoke credentials by username")
    _add_config(c)
    c.add_argument("username")
    c = accounts.add_parser(
        "export-mosquitto", help="write Mosquitto's password_file and acl_file (then reload it with SIGHUP)"
    )
    _add_config(c)
    c.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for password_file and acl_file")
    c.add_argument(
        "--file-mode", type=lambda v: int(v, 8), default=0o600, metavar="OCTAL", help="file permissions (0600)"
    )
    c.add_argument(
        "--watch",
        action="store_true",
        help="keep running: export again every --interval seconds and rewrite the files only when credentials or "
        "camera owners changed (stop with Ctrl-C or SIGTERM)",
    )
    c.add_argument(
        "--interval", type=float, default=5.0, metavar="SECONDS", help="with --watch: seconds between checks (5)"
    )
    c.add_argument(
        "--pid-file",
        type=Path,
        metavar="FILE",
        help="Mosquitto's pid_file: send it SIGHUP after each change (without it, reload Mosquitto yourself; "
        "deploy/mosquitto/entrypoint.sh reloads on changed files by itself)",
    )


def _export_mosquitto(session: Any, args: argparse.Namespace, settings: Any) -> None:
    """``mqtt export-mosquitto``: write the files once, or with ``--watch`` keep them current until SIGINT/SIGTERM."""
    import threading

    from camfleet_hub.core.comms import mosquitto_export
    from camfleet_hub.core.db.session import make_sessionmaker
    from camfleet_hub.core.errors import InvalidError

    if args.watch and args.interval <= 0:
        raise InvalidError("--interval must be more than 0 seconds")
    password = settings.mqtt.password.get_secret_value() if settings.mqtt.password else None
    sessions = make_sessionmaker(session.get_bind())
    session.close()  # each round below reads in a session of its own; nothing stays open while watching
    try:
        hub = mosquitto_export.hub_user(settings.mqtt.username, password, args.out / mosquitto_export.PASSWORD_FILE)
        exporter = mosquitto_export.Exporter(
            sessions, args.out, settings.mqtt.root, hub, args.file_mode, args.interval, args.pid_file
        )
        done = exporter.sync(always=not args.watch)
    except mosquitto_export.ExportError as exc:
        raise InvalidError(str(exc)) from None
    except OSError as exc:
        raise InvalidError(f"--out {args.out}: {exc.strerror or exc}") from None
    after = f"sent Mosquitto SIGHUP ({args.pid_file})" if args.pid_file else "reload Mosquitto with SIGHUP"
    if done is None:
        print(f"{args.out}: the files are current", flush=True)
    else:
        files = f"{args.out / mosquitto_export.PASSWORD_FILE} and {args.out / mosquitto_export.ACL_FILE}"
        print(f"wrote {files}: {done.users} users ({done.agents} agents, "
              f"{done.observers} observers, the hub); {after}", flush=True)  # fmt: skip
    if not args.watch:
        return
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"watching credentials and camera owners every {args.interval:g} s (Ctrl-C to stop)", flush=True)
    try:
        exporter.watch(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _read_password(args: argparse.Namespace) -> str:
    import getpass

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("camfleet-hub: the passwords differ")
    return first


def _accounts(args: argparse.Namespace) -> int:
    """``user create|passwd`` and ``token create`` against the configured database."""
    from camfleet_hub.auth import callers, tokens, users
    from camfleet_hub.auth.models import Role
    from camfleet_hub.auth.principal import Principal
    from camfleet_hub.core.db.session import make_engine, make_sessionmaker, migrate
    from camfleet_hub.core.errors import ServiceError
    from camfleet_hub.datasets import crud

    settings = _load(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url())
    try:
        migrate(engine)
        with make_sessionmaker(engine)() as session:
            try:
                if args.command == "user" and args.user_command == "create":
                    grants = []
                    for item in args.role:
                        site, _, role = item.partition("=")
                        grants.append((crud.get_site(session, site), users.checked_role(role, f"--role {item}")))
                    user = users.create_user(session, args.username, _read_password(args), is_admin=args.admin)
                    for site_row, role_value in grants:
                        users.set_site_role(session, user, site_row, role_value)
                    print(f"created user {user.username}" + (" (hub admin)" if user.is_admin else ""))
                elif args.command == "user":
                    user = users.get_user_by_name(session, args.username)
                    users.update_user(session, user, password=_read_password(args))
                    print(f"password of {user.username} changed")
                elif args.command == "mqtt":
                    _mqtt_accounts(session, args, settings)
                else:
                    owner = users.get_user_by_name(session, args.user) if args.user else None
                    caller = callers.caller_of_user(session, owner) if owner else Principal("cli", True, None)
                    scope = crud.get_site(session, args.site) if args.site else None
                    _token, secret = tokens.create_token(session, caller, args.name, scope, Role(args.role))
                    print(secret)
            except ServiceError as exc:
                print(f"camfleet-hub: {exc.detail}", file=sys.stderr)
                return 1
    finally:
        engine.dispose()
    return 0


def _mqtt_accounts(session: Any, args: argparse.Namespace, settings: Any) -> None:
    """``mqtt create|revoke|export-mosquitto``: the password is printed once and never stored in clear."""
    from sqlalchemy import select

    from camfleet_hub.auth import mqtt_accounts
    from camfleet_hub.auth.models import MqttAccount, MqttAccountKind
    from camfleet_hub.core.errors import ConflictError, NotFoundError
    from camfleet_hub.datasets import crud

    if args.mqtt_command == "export-mosquitto":
        _export_mosquitto(session, args, settings)
        return
    if args.mqtt_command == "revoke":
        row = mqtt_accounts.get_account_by_username(session, args.username)
        mqtt_accounts.revoke(session, row)
        print(f"revoked {row.username}")
        return
    given = _given_mqtt_password(args)  # checked before anything is created
    site = None
    if args.site:
        try:
            site = crud.get_site(session, args.site)
        except NotFoundError:
            if not args.create_site:
                raise
            site = crud.create_site(session, args.site)
            print(f"created site {site.name}")
    kind, name = (MqttAccountKind.AGENT, args.agent) if args.agent else (MqttAccountKind.OBSERVER, args.observer)
    if given is None:
        issued = mqtt_accounts.create_account(session, kind, site, name, "cli")
        print(f"username: {issued.account.username}\npassword: {issued.password}")
        return
    # A deployment's one-shot job runs this at every start: the same password again is a no-op, not a 409.
    username = mqtt_accounts.username_of(kind, site.name if site else None, name)
    row = session.scalar(select(MqttAccount).where(MqttAccount.username == username))
    if row is not None and row.revoked_at is None:
        if not mqtt_accounts.verify_secret(given, row.password_hash):
            raise ConflictError(
                f"MQTT account username={username!r} already exists with another password; revoke it first"
            )
        print(f"username: {username} (exists, same password)")
        return
    issued = mqtt_accounts.create_account(session, kind, site, name, "cli")
    issued.account.password_hash = mqtt_accounts.hash_secret(given)  # the random one was never shown
    session.commit()
    print(f"username: {username}")


# The hash uses few PBKDF2 rounds (made for random secrets), so a given password must be long enough not to guess.
MIN_MQTT_PASSWORD_CHARS = 16


def _given_mqtt_password(args: argparse.Namespace) -> str | None:
    """The password of ``--password-stdin`` / ``--password-env NAME``, checked; ``None``: make a random one."""
    from camfleet_hub.auth.mqtt_accounts import MAX_PASSWORD_CHARS
    from camfleet_hub.core.errors import InvalidError

    if args.password_stdin:
        source, password = "--password-stdin", sys.stdin.readline().rstrip("\r\n")
    elif args.password_env:
        source, password = f"--password-env {args.password_env}", os.environ.get(args.password_env, "")
    else:
        return None
    if not MIN_MQTT_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise InvalidError(
            f"{source}: the password has {len(password)} characters; "
            f"{MIN_MQTT_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} are needed"
        )
    if any(ch.isspace() for ch in password):
        raise InvalidError(f"{source}: the password must not hold spaces or line breaks")
    return password


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from camfleet_contract.config import ConfigError
    from camfleet_hub.core.config import load_settings

    try:
        return load_settings(args.config)
    except ConfigError as exc:
        print(f"camfleet-hub: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _backup(args: argparse.Namespace) -> int:
    """``backup --out DIR`` / ``restore --from DIR``; prints what was copied."""
    from camfleet_hub.core import backup

    settings = _load(args)
    try:
        if args.command == "backup":
            m = backup.backup(settings, args.out)
            print(f"backup of {m.database} (schema {m.schema_revision}), {m.objects} objects ({m.object_bytes} bytes)"
                  f" and the fleet key {m.fleet_key_fingerprint} written to {args.out}")  # fmt: skip
        else:
            m = backup.restore(settings, args.source)
            print(f"restored {m.objects} objects, the {m.database} database and the fleet key {m.fleet_key_fingerprint}"
                  f" from {args.source} (made {m.created_at} by hub {m.hub_version})")  # fmt: skip
    except backup.BackupError as exc:
        print(f"camfleet-hub: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_until_signal(
    args: argparse.Namespace, *, http: bool, ingest: bool | None, broker: bool | None = None, publisher: bool = True
) -> int:
    """Start the hub parts, wait for Ctrl-C / SIGTERM, stop cleanly."""
    from camfleet_hub.app import Hub, HubStartError
    from camfleet_hub.core.logs import setup_logging

    settings = _load(args)
    setup_logging(settings.log, level=args.log_level)  # one format for the hub's and uvicorn's lines
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
    from camfleet_hub.core.logs import LogSettings, setup_logging

    setup_logging(LogSettings(), level=args.log_level)  # serve/ingest apply the config's [log] once it is read
    if args.command == "serve":
        return _run_until_signal(args, http=True, ingest=False if args.no_ingest else None)
    if args.command == "ingest":
        return _run_until_signal(args, http=False, ingest=True, broker=False, publisher=False)
    if args.command == "migrate":
        from camfleet_hub.core.db.session import make_engine, migrate

        settings = _load(args)
        engine = make_engine(settings.db_url())
        try:
            migrate(engine)
        finally:
            engine.dispose()
        print(f"database schema is up to date: {engine.url.render_as_string(hide_password=True)}")
        return 0
    if args.command in ("backup", "restore"):
        return _backup(args)
    if args.command in ("user", "token", "mqtt"):
        return _accounts(args)
    if args.command == "demo":
        from camfleet_hub import demo

        return int(demo.main(args) or 0)
    raise AssertionError(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
