"""SQL tables of accounts: users, site roles, API tokens, login sessions and attempts, MQTT accounts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from camfleet_hub.core.db.base import NAME_LEN, SHA256_LEN, Base, one_of
from camfleet_hub.core.db.types import utcnow


class Role(StrEnum):
    """A user's role in one site, strongest first: admin (everything, users), labeller (curate), viewer (read)."""

    ADMIN = "admin"
    LABELLER = "labeller"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return {"admin": 3, "labeller": 2, "viewer": 1}[self.value]


class User(Base):
    """A person who logs in to the hub; ``is_admin`` is a hub-wide administrator (every site, users)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    # KDF string "scrypt$n$r$p$salt_hex$hash_hex".
    password_hash: Mapped[str] = mapped_column(String(512))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(default=None)


class SiteRole(Base):
    """One user's role in one site."""

    __tablename__ = "site_roles"
    __table_args__ = (
        UniqueConstraint("user_id", "site_id"),
        CheckConstraint(one_of("role", Role), name="role"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))


class ApiToken(Base):
    """A revocable bearer token for scripts, agents and trainers; scoped to one site (NULL: every site)."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(one_of("role", Role), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    # sha256 of the secret; the secret itself is shown once, at creation.
    token_sha256: Mapped[str] = mapped_column(String(SHA256_LEN), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class LoginSession(Base):
    """A browser session (cookie holds the secret, the table its sha256), ended by logout or expiry."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(SHA256_LEN), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class LoginAttempt(Base):
    """A failed login, kept for the login limits' window in SQL so every hub process counts the same failures."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_username_at", "username", "at"),
        Index("ix_login_attempts_address_at", "address", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(NAME_LEN))  # lower-cased, cut to NAME_LEN
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class MqttAccountKind(StrEnum):
    """What an issued MQTT account may do (topic rules in ``camfleet_hub.core.comms.acl``)."""

    AGENT = "agent"
    OBSERVER = "observer"


class MqttAccount(Base):
    """MQTT credentials the hub issued: an agent bound to its site and agent name, or an observer of a site
    (``site_id`` NULL: every site). The password is shown once; only its hash is kept (Mosquitto's ``$7$`` form)."""

    __tablename__ = "mqtt_accounts"
    __table_args__ = (CheckConstraint(one_of("kind", MqttAccountKind), name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # "agent/{site}/{agent}" or "observer/{site|*}/{name}": never "hub", and never a bare site name.
    username: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    password_hash: Mapped[str] = mapped_column(String(256))
    created_by: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
