"""Who is calling: the ``Principal`` a user, a bearer token or a session cookie stands for."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_hub.auth.models import ApiToken, LoginSession, Role, User
from camfleet_hub.auth.passwords import secret_digest
from camfleet_hub.auth.principal import Principal
from camfleet_hub.auth.users import roles_of
from camfleet_hub.core.db.types import utcnow

TOKEN_TOUCH_S = 60.0  # last_used_at is written at most once a minute per token


class EverySite(Mapping[int, Role]):
    """The same role in every site (an every-site token that is not an admin token)."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def __getitem__(self, _site_id: int) -> Role:
        return self.role

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"EverySite({self.role.value})"


def caller_of_user(session: Session, user: User, session_id: int | None = None) -> Principal:
    roles = roles_of(session, user.id)
    return Principal(name=user.username, admin=user.is_admin, user_id=user.id, roles=roles, session_id=session_id)


def _weaker(a: Role | None, b: Role | None) -> Role | None:
    if a is None or b is None:
        return None
    return a if a.rank <= b.rank else b


def caller_of_token(session: Session, secret: str) -> Principal | None:
    """The caller a bearer token stands for, or None when it is unknown, revoked or its owner lost the rights."""
    token = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == secret_digest(secret)))
    if token is None or token.revoked_at is not None:
        return None
    owner = session.get(User, token.user_id) if token.user_id is not None else None
    if token.user_id is not None and (owner is None or owner.disabled):
        return None
    role = Role(token.role)
    name = f"token:{token.name}"[:64]
    owner_admin = owner is None or owner.is_admin
    if token.site_id is None:
        if not owner_admin:
            return None  # every-site tokens belong to hub admins
        caller = Principal(name, role == Role.ADMIN, token.user_id, EverySite(role), token.id)
    else:
        held = role if owner_admin else _weaker(role, roles_of(session, owner.id).get(token.site_id))  # type: ignore[union-attr]
        caller = Principal(name, False, token.user_id, {token.site_id: held} if held else {}, token.id)
    now = utcnow()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > TOKEN_TOUCH_S:
        token.last_used_at = now
        session.commit()
    return caller


def caller_of_cookie(session: Session, secret: str) -> Principal | None:
    """The logged-in user of a session cookie, or None when it is unknown, expired or the user is disabled."""
    row = session.scalar(select(LoginSession).where(LoginSession.token_sha256 == secret_digest(secret)))
    if row is None or row.expires_at <= utcnow():
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    return caller_of_user(session, user, row.id)
