"""Mosquitto's ``password_file`` and ``acl_file`` from the hub's MQTT accounts and the one rule table.

Mosquitto cannot ask the hub's database, so ``camfleet-hub mqtt export-mosquitto --out DIR`` writes what it needs:
every unrevoked account's stored ``$7$`` hash (plus the hub's own user) and one ``user`` block per account,
rendered from ``comms.acl.RULES`` (the rules the embedded broker enforces), so each agent is bound to its own
site *and* agent name, plus ``topic deny`` lines for the frame/event topics of its site's cameras that other agents
own. What Mosquitto enforces changes with credentials created or revoked and with camera ownership (a status
claiming a new camera, an admin reassigning one): ``--watch`` keeps exporting, rewrites the files only when their
text changes and then reloads Mosquitto (SIGHUP to ``--pid-file``; Mosquitto's entrypoint in ``deploy/`` also
reloads on changed files). Both files are replaced atomically (a reload never reads half a file), and the hub's own
hash is kept from the last export when it still matches, so an unchanged export is byte for byte the same.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from camfleet_hub.auth.models import MqttAccount
from camfleet_hub.auth.mqtt_accounts import hash_secret, principal_of, verify_secret
from camfleet_hub.core.comms.acl import MqttPrincipal, MqttRole, owned_camera_denies, rules_for
from camfleet_hub.datasets import camera_owners
from camfleet_hub.datasets.models import Site

log = logging.getLogger(__name__)

PASSWORD_FILE = "password_file"
ACL_FILE = "acl_file"
# Both files separate fields with ':' or spaces; hub-issued names never hold them, a configured hub name might.
_USERNAME_RE = re.compile(r"[^\s:#]{1,256}")


class ExportError(ValueError):
    """The export cannot be written as asked (names the setting or value)."""


@dataclass(frozen=True)
class MqttUser:
    """One line of the password file and one block of the acl file."""

    principal: MqttPrincipal
    password_hash: str


@dataclass(frozen=True)
class Export:
    """Both files' text, built together from one read of the database."""

    password_text: str
    acl_text: str
    users: int
    agents: int
    observers: int


def hub_user(username: str | None, password: str | None, previous: Path | None = None) -> MqttUser:
    """The hub's own user from ``mqtt.username`` / ``mqtt.password`` (Mosquitto needs the password set).

    The hash in ``previous`` (an earlier password_file) is kept when it matches the password: a fresh salt would
    change the file, and a watcher would reload Mosquitto for nothing."""
    if not password:
        raise ExportError("mqtt.password: set the hub's MQTT password; Mosquitto's password file needs it")
    name = username or "hub"
    stored = _previous_hash(previous, name, password) or hash_secret(password)
    return MqttUser(MqttPrincipal(MqttRole.HUB, name), stored)


def _previous_hash(previous: Path | None, username: str, password: str) -> str | None:
    try:
        lines = previous.read_text(encoding="utf-8").splitlines() if previous is not None else []
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        name, _, stored = line.partition(":")
        if name == username:
            return stored if verify_secret(password, stored) else None
    return None


def account_users(session: Session) -> list[MqttUser]:
    """Every unrevoked agent and observer account, oldest first (revoked ones are left out: refused)."""
    users = []
    query = select(MqttAccount).where(MqttAccount.revoked_at.is_(None)).order_by(MqttAccount.id)
    for row in session.scalars(query):
        site = session.get(Site, row.site_id) if row.site_id is not None else None
        if row.site_id is not None and site is None:
            continue  # the site is gone: the embedded broker refuses these too
        users.append(MqttUser(principal_of(row, site.name if site else None), row.password_hash))
    return users


def password_text(users: list[MqttUser]) -> str:
    return "".join(f"{_checked(u.principal.username)}:{u.password_hash}\n" for u in users)


def acl_text(users: list[MqttUser], root: str, owners: Mapping[tuple[str, str], str] | None = None) -> str:
    """One ``user`` block per user; no ``pattern`` lines (they would apply to every user, the hub's included).

    ``owners`` (``{(site, camera): agent}``) adds to each agent's block a deny for every camera another agent owns."""
    out = [
        "# camfleet acl_file, written by `camfleet-hub mqtt export-mosquitto` from camfleet_hub/comms/acl.py",
        "# (RULES): one block per MQTT user, each agent bound to its own site and agent name, denied the cameras",
        "# other agents own. Do not edit; export again after creating or revoking credentials and after camera",
        "# ownership changes, then reload Mosquitto (SIGHUP).",
    ]
    for user in users:
        out += ["", f"user {_checked(user.principal.username)}"]
        lines = rules_for(user.principal, root) + owned_camera_denies(user.principal, root, owners or {})
        out += [f"topic {access.value} {topic}" for access, topic in lines]
    return "\n".join(out) + "\n"


def _checked(username: str) -> str:
    if not _USERNAME_RE.fullmatch(username):
        raise ExportError(f"username={username!r} cannot go into a Mosquitto password or acl file")
    return username


def write_atomically(path: Path, text: str, mode: int) -> None:
    """Write a temporary file beside ``path``, flush it to disk, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render(session: Session, *, root: str, hub: MqttUser) -> Export:
    """Both files for the hub and every unrevoked account, with the camera owners' deny lines."""
    users = [hub, *account_users(session)]
    roles = [u.principal.role for u in users]
    return Export(
        password_text(users),
        acl_text(users, root, camera_owners.owners(session)),
        len(users),
        roles.count(MqttRole.AGENT),
        roles.count(MqttRole.OBSERVER),
    )


def write(files: Export, out: Path, file_mode: int = 0o600) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / PASSWORD_FILE, files.password_text, file_mode)
    write_atomically(out / ACL_FILE, files.acl_text, file_mode)


def _on_disk(out: Path) -> tuple[str, str] | None:
    try:
        return (out / PASSWORD_FILE).read_text(encoding="utf-8"), (out / ACL_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def reload_mosquitto(pid_file: Path) -> int:
    """Send SIGHUP to the Mosquitto whose pid ``pid_file`` holds (its ``pid_file`` setting); returns the pid."""
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError) as exc:
        raise ExportError(f"--pid-file {pid_file}: no process id in it ({exc})") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise ExportError(f"--pid-file {pid_file}: cannot signal process {pid} ({exc.strerror or exc})") from None
    return pid


@dataclass
class Exporter:
    """Writes ``out/password_file`` and ``out/acl_file`` and reloads Mosquitto (``pid_file``): once (``sync``), or
    every ``interval_s`` (``watch``), then only when the text differs from the files there. A failed round of
    ``watch`` (database, disk, signal) is logged and retried at the next one; the files keep their last good text
    meanwhile."""

    sessions: sessionmaker[Session]
    out: Path
    root: str
    hub: MqttUser
    file_mode: int = 0o600
    interval_s: float = 5.0
    pid_file: Path | None = None
    _reload_pending: bool = field(default=False, init=False)

    def sync(self, *, always: bool = False) -> Export | None:
        """One round: what was written, or None when the files already said the same (``always``: write them
        anyway). A reload that failed is tried again in the next round, changed files or not."""
        with self.sessions() as session:
            files = render(session, root=self.root, hub=self.hub)
        changed = always or _on_disk(self.out) != (files.password_text, files.acl_text)
        if changed:
            write(files, self.out, self.file_mode)
        if self.pid_file is not None and (changed or self._reload_pending):
            self._reload_pending = True
            reload_mosquitto(self.pid_file)
            self._reload_pending = False
        return files if changed else None

    def watch(self, stop: threading.Event) -> None:
        """A ``sync`` every ``interval_s`` until ``stop`` is set."""
        while not stop.wait(self.interval_s):
            try:
                done = self.sync()
            except Exception:  # noqa: BLE001 - the next round retries; Mosquitto keeps the last good files
                log.exception("mosquitto export: this round failed; retrying in %.0f s", self.interval_s)
            else:
                if done is not None:
                    log.info(
                        "mosquitto export: %s and %s rewritten (%d users, %d agents, %d observers)%s",
                        self.out / PASSWORD_FILE, self.out / ACL_FILE, done.users, done.agents, done.observers,
                        f"; Mosquitto reloaded ({self.pid_file})" if self.pid_file else "",
                    )  # fmt: skip
