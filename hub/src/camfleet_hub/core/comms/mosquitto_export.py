"""Mosquitto's ``password_file`` and ``acl_file`` from the hub's MQTT accounts and the one rule table.

Mosquitto cannot ask the hub's database, so ``camfleet-hub mqtt export-mosquitto --out DIR`` writes what it needs:
every unrevoked account's stored ``$7$`` hash (plus the hub's own user) and one ``user`` block per account,
rendered from ``comms.acl.RULES`` (the rules the embedded broker enforces), so each agent is bound to its own
site *and* agent name, plus ``topic deny`` lines for the frame/event topics of its site's cameras that other agents
own. Run it after creating or revoking credentials *and after camera ownership changes* (a status claiming a new
camera, an admin reassigning one), then send Mosquitto SIGHUP to reload; until then a newly claimed camera stays
writable by every agent of its site, as an unowned camera always is.
Both files are replaced atomically (a reload never reads half a file).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_hub.auth.models import MqttAccount
from camfleet_hub.auth.mqtt_accounts import hash_secret, principal_of
from camfleet_hub.core.comms.acl import MqttPrincipal, MqttRole, owned_camera_denies, rules_for
from camfleet_hub.datasets import camera_owners
from camfleet_hub.datasets.models import Site

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
class ExportResult:
    password_file: Path
    acl_file: Path
    users: int
    agents: int
    observers: int


def hub_user(username: str | None, password: str | None) -> MqttUser:
    """The hub's own user from ``mqtt.username`` / ``mqtt.password`` (Mosquitto needs the password set)."""
    if not password:
        raise ExportError("mqtt.password: set the hub's MQTT password; Mosquitto's password file needs it")
    return MqttUser(MqttPrincipal(MqttRole.HUB, username or "hub"), hash_secret(password))


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


def export(session: Session, out: Path, *, root: str, hub: MqttUser, file_mode: int = 0o600) -> ExportResult:
    """Write ``out/password_file`` and ``out/acl_file`` for the hub and every unrevoked account."""
    users = [hub, *account_users(session)]
    owners = camera_owners.owners(session)
    passwords, acl = password_text(users), acl_text(users, root, owners)  # both built before either is written
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / PASSWORD_FILE, passwords, file_mode)
    write_atomically(out / ACL_FILE, acl, file_mode)
    roles = [u.principal.role for u in users]
    return ExportResult(
        out / PASSWORD_FILE, out / ACL_FILE, len(users), roles.count(MqttRole.AGENT), roles.count(MqttRole.OBSERVER)
    )
