"""MQTT credentials the hub issues: per-agent (bound to a site and agent name) and read-only observers.

The password is a random 256-bit secret shown once; the table keeps Mosquitto's ``$7$`` PBKDF2-SHA512 form of it,
so the same hashes can go into a Mosquitto ``password_file``. Revoked accounts stop connecting at once on the
embedded broker (it asks ``verify`` on every CONNECT).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from camfleet_hub.auth.models import MqttAccount, MqttAccountKind
from camfleet_hub.core.comms.acl import MqttPrincipal, MqttRole
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import ConflictError, InvalidError, NotFoundError
from camfleet_hub.datasets.crud import checked_name
from camfleet_hub.datasets.models import Site

# The secret is random (not a human password), so iterations add nothing but CPU per CONNECT; Mosquitto reads
# the count from the hash.
PBKDF2_ITERATIONS = 1000
MAX_ITERATIONS = 1_000_000
SALT_BYTES = 12
MAX_PASSWORD_CHARS = 1024
EVERY_SITE = "*"


def hash_secret(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    """``$7$iterations$salt_b64$hash_b64`` (Mosquitto 2's password-file format)."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_secret(password: str, stored: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash (constant-time; malformed or oversized → False)."""
    try:
        _, kind, iterations_s, salt_b64, hash_b64 = stored.split("$")
        iterations = int(iterations_s)
        salt, expected = base64.b64decode(salt_b64, validate=True), base64.b64decode(hash_b64, validate=True)
    except ValueError:
        return False
    if kind != "7" or not (0 < iterations <= MAX_ITERATIONS) or len(password) > MAX_PASSWORD_CHARS:
        return False
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations), expected)


def username_of(kind: MqttAccountKind, site: str | None, name: str) -> str:
    """``agent/{site}/{agent}`` or ``observer/{site|*}/{name}``: distinct from ``hub`` and from any site name."""
    return f"{kind.value}/{site or EVERY_SITE}/{name}"


@dataclass(frozen=True)
class IssuedAccount:
    """A new account with its password, which is never shown again."""

    account: MqttAccount
    password: str


def create_account(
    session: Session, kind: MqttAccountKind, site: Site | None, name: str, created_by: str
) -> IssuedAccount:
    """Issue credentials; 409 while the same agent (or observer name) still holds unrevoked ones."""
    checked_name(name, "agent" if kind is MqttAccountKind.AGENT else "name")
    if kind is MqttAccountKind.AGENT and site is None:
        raise InvalidError("site: an agent's MQTT account belongs to one site")
    username = username_of(kind, site.name if site else None, name)
    password = secrets.token_urlsafe(32)
    row = session.scalar(select(MqttAccount).where(MqttAccount.username == username))
    if row is not None and row.revoked_at is None:
        raise ConflictError(f"MQTT account username={username!r} already exists; revoke it first")
    if row is None:
        row = MqttAccount(username=username, kind=kind.value, site_id=site.id if site else None, name=name)
        session.add(row)
    row.password_hash = hash_secret(password)
    row.created_by = created_by
    row.created_at = utcnow()
    row.revoked_at = None
    session.commit()
    return IssuedAccount(row, password)


def list_accounts(session: Session, site: Site | None) -> list[MqttAccount]:
    """Accounts of one site (``None``: every account), newest first, revoked ones included."""
    query = select(MqttAccount).order_by(MqttAccount.id.desc())
    if site is not None:
        query = query.where(MqttAccount.site_id == site.id)
    return list(session.scalars(query))


def get_account(session: Session, site: Site | None, account_id: int) -> MqttAccount:
    """One account, looked up within ``site`` (a 404 for another site's id, so ids reveal nothing)."""
    row = session.get(MqttAccount, account_id)
    if row is None or (site is not None and row.site_id != site.id):
        raise NotFoundError(f"MQTT account id={account_id} not found")
    return row


def get_account_by_username(session: Session, username: str) -> MqttAccount:
    row = session.scalar(select(MqttAccount).where(MqttAccount.username == username))
    if row is None:
        raise NotFoundError(f"MQTT account username={username!r} not found")
    return row


def revoke(session: Session, row: MqttAccount) -> datetime:
    """Revoke (idempotent); the embedded broker refuses the next CONNECT with these credentials."""
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    assert row.revoked_at is not None
    return row.revoked_at


def principal_of(row: MqttAccount, site_name: str | None) -> MqttPrincipal:
    if row.kind == MqttAccountKind.AGENT.value:
        return MqttPrincipal(MqttRole.AGENT, row.username, site=site_name, agent=row.name)
    return MqttPrincipal(MqttRole.OBSERVER, row.username, site=site_name)


class AccountVerifier:
    """The embedded broker's ``verify``: (username, password) → principal, from the hub's database."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def __call__(self, username: str, password: str) -> MqttPrincipal | None:
        with self._sessions() as session:
            row = session.scalar(select(MqttAccount).where(MqttAccount.username == username))
            if row is None or row.revoked_at is not None:
                verify_secret(password, _dummy_hash())  # same time as a real check: usernames are not probed by timing
                return None
            if not verify_secret(password, row.password_hash):
                return None
            site = session.get(Site, row.site_id) if row.site_id is not None else None
            if row.site_id is not None and site is None:
                return None
            return principal_of(row, site.name if site else None)


@functools.cache
def _dummy_hash() -> str:
    """A hash of a throw-away secret for unknown names, made on first use (not at import: PBKDF2 costs real time)."""
    return hash_secret(secrets.token_urlsafe(16))
