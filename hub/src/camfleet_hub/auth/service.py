"""Users, site roles, API tokens, browser login sessions, the login rate limit and the first admin.

Rules (the REST API and the web UI enforce the same ones):
- A hub admin (``users.is_admin``) may do everything. Otherwise a user holds one role per site:
  admin (everything in that site, grants roles there), labeller (curate), viewer (read).
- An API token carries a role and a site (NULL = every site; only hub admins create those). Its power is
  capped by its owner's current rights: a token never does more than the user who made it could do now.
  An every-site admin token acts as a hub admin (what trainers use).
- Secrets (token and session cookie) are shown once; the database keeps their sha256.
- Accounts (users, roles, passwords, tokens) are managed from a logged-in session only, never with a token
  (``api.deps.SessionUserDep``; ``create_token`` refuses a token caller too). A password change or a user's
  removal revokes that user's sessions and tokens.
- Failed logins are rows in SQL (every hub process sees them), limited per username, per address and per pair.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from camfleet_hub.auth.models import ApiToken, LoginAttempt, LoginSession, Role, SiteRole, User
from camfleet_hub.auth.passwords import (
    burn_time,
    hash_password,
    new_secret,
    random_password,
    secret_digest,
    verify_password,
)
from camfleet_hub.auth.principal import Principal
from camfleet_hub.core.config import AuthSettings, reveal
from camfleet_hub.core.db.base import NAME_LEN
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    RateLimitedError,
    UnauthenticatedError,
)
from camfleet_hub.datasets.models import Site

log = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_TOKEN_NAME = 128
TOKEN_TOUCH_S = 60.0  # last_used_at is written at most once a minute per token


class LoginRateLimited(RateLimitedError):
    """Too many failed logins; ``retry_after_s`` is when the oldest failure leaves the window."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


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


# --------------------------------------------------------------------------- validation


def checked_username(value: str) -> str:
    if not USERNAME_RE.fullmatch(value or ""):
        raise InvalidError(
            f"username={value!r} must be 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return value


def checked_password(value: str) -> str:
    if not (MIN_PASSWORD <= len(value) <= MAX_PASSWORD):
        raise InvalidError(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters (got {len(value)})")
    return value


def checked_role(value: str, what: str = "role") -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidError(f"{what}={value!r} must be one of admin, labeller, viewer") from None


# --------------------------------------------------------------------------- users


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"user id={user_id} not found")
    return user


def find_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def get_user_by_name(session: Session, username: str) -> User:
    user = find_user(session, username)
    if user is None:
        raise NotFoundError(f"user={username!r} not found")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def visible_users(session: Session, caller: Principal) -> list[dict[str, object]]:
    """Users as ``user_view`` dicts: every user with all roles for hub admins; for a site admin only users
    holding a role in a site they administer, with only those roles (other sites stay invisible)."""
    if caller.admin:
        return [user_view(session, u) for u in list_users(session)]
    admin_sites = sorted(s for s, r in caller.roles.items() if r == Role.ADMIN)
    if not admin_sites:
        raise ForbiddenError(f"user {caller.name!r} is not an administrator of the hub or of a site")
    q = select(User).join(SiteRole, SiteRole.user_id == User.id).where(SiteRole.site_id.in_(admin_sites))
    users = list(session.scalars(q.distinct().order_by(User.username)))
    return [user_view(session, u, admin_sites) for u in users]


def count_users(session: Session) -> int:
    return int(session.scalar(select(func.count(User.id))) or 0)


def create_user(session: Session, username: str, password: str, *, is_admin: bool = False) -> User:
    checked_username(username)
    checked_password(password)
    if find_user(session, username) is not None:
        raise ConflictError(f"username={username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    session.add(user)
    session.commit()
    return user


def _other_active_admins(session: Session, user: User) -> int:
    q = select(func.count(User.id)).where(User.is_admin.is_(True), User.disabled.is_(False), User.id != user.id)
    return int(session.scalar(q) or 0)


def revoke_credentials(session: Session, user_id: int) -> None:
    """End every session and revoke every token of a user (no commit: part of the caller's change)."""
    session.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
    session.execute(
        update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow())
    )


def check_current_password(user: User, current: str | None) -> None:
    """A self-service password change proves the old password (a stolen session alone cannot lock one out)."""
    if not current:
        raise InvalidError("current_password is required to change your own password")
    if not verify_password(current, user.password_hash):
        raise ForbiddenError("current_password is wrong")


def update_user(
    session: Session,
    user: User,
    *,
    password: str | None = None,
    disabled: bool | None = None,
    is_admin: bool | None = None,
) -> User:
    """Change a password, disable/enable, grant/revoke hub admin; the last active hub admin stays one.

    A new password or disabling ends the user's sessions and revokes their tokens (a leaked credential dies
    with the password it came from); the caller re-issues its own session after a self-change."""
    losing_admin = user.is_admin and not user.disabled and (disabled is True or is_admin is False)
    if losing_admin and _other_active_admins(session, user) == 0:
        raise ConflictError(f"user {user.username!r} is the last active hub administrator")
    if password is not None:
        user.password_hash = hash_password(checked_password(password))
    if disabled is not None:
        user.disabled = disabled
    if is_admin is not None:
        user.is_admin = is_admin
    if password is not None or disabled:
        revoke_credentials(session, user.id)
    session.commit()
    return user


def delete_user(session: Session, user: User) -> None:
    """Remove a user, their sessions and tokens (explicitly, not trusting the database's cascade)."""
    if user.is_admin and not user.disabled and _other_active_admins(session, user) == 0:
        raise ConflictError(f"user {user.username!r} is the last active hub administrator")
    revoke_credentials(session, user.id)
    session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
    session.delete(user)
    session.commit()


def roles_of(session: Session, user_id: int) -> dict[int, Role]:
    rows = session.execute(select(SiteRole.site_id, SiteRole.role).where(SiteRole.user_id == user_id))
    return {site_id: Role(role) for site_id, role in rows}


def role_names(session: Session, user_id: int, only_sites: list[int] | None = None) -> dict[str, str]:
    """``{site name: role}`` of a user, for views (``only_sites``: just those site ids)."""
    q = select(Site.name, SiteRole.role).join(Site, Site.id == SiteRole.site_id).where(SiteRole.user_id == user_id)
    if only_sites is not None:
        q = q.where(SiteRole.site_id.in_(only_sites))
    return dict(sorted((name, role) for name, role in session.execute(q)))


def set_site_role(session: Session, user: User, site: Site, role: Role | None) -> None:
    """Grant ``role`` in ``site`` (replacing any other), or remove the user's role there (``None``)."""
    row = session.scalar(select(SiteRole).where(SiteRole.user_id == user.id, SiteRole.site_id == site.id))
    if role is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(SiteRole(user_id=user.id, site_id=site.id, role=role.value))
    else:
        row.role = role.value
    session.commit()


def first_admin(session: Session, settings: AuthSettings) -> str | None:
    """Create ``admin_username`` when no user exists; returns the generated password (None: not created or set)."""
    if count_users(session) > 0:
        return None
    password = reveal(settings.admin_password) or random_password()
    create_user(session, settings.admin_username, password, is_admin=True)
    log.info("created the first hub administrator %r", settings.admin_username)
    return None if settings.admin_password else password


# --------------------------------------------------------------------------- who is calling


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


def csrf_token(session_secret: str) -> str:
    """The session's CSRF token: derived from the cookie secret, so it needs no storage, changes with every
    login and cannot be computed by a page that does not hold the (HttpOnly) cookie."""
    return hmac.new(session_secret.encode(), b"camfleet-csrf-v1", hashlib.sha256).hexdigest()


def csrf_matches(session_secret: str, sent: str) -> bool:
    return hmac.compare_digest(csrf_token(session_secret), sent)


# --------------------------------------------------------------------------- login


@dataclass(frozen=True)
class LoginLimits:
    """How many failed logins a window allows, per (username, address), per username and per address."""

    pair: int
    per_user: int
    per_address: int
    window_s: float

    @classmethod
    def of(cls, settings: AuthSettings) -> LoginLimits:
        return cls(
            settings.login_attempts,
            settings.login_attempts_per_user,
            settings.login_attempts_per_address,
            settings.login_window_s,
        )


def _attempt_key(username: str) -> str:
    return username.lower()[:NAME_LEN]


def _retry_after(oldest: datetime, window_s: float, now: datetime) -> int:
    return max(1, int((oldest + timedelta(seconds=window_s) - now).total_seconds() + 0.999))


def check_login_limits(session: Session, limits: LoginLimits, username: str, address: str) -> None:
    """Raise 429 (with the seconds to wait) when a limit is reached: the pair, the username from any address
    (guessing from many addresses), or the address for any username (one password sprayed over many names)."""
    now = utcnow()
    since = now - timedelta(seconds=limits.window_s)
    name = _attempt_key(username)
    checks = (
        (
            (LoginAttempt.username == name) & (LoginAttempt.address == address),
            limits.pair,
            f"for username={username!r} from this address",
        ),
        (LoginAttempt.username == name, limits.per_user, f"for username={username!r}"),
        (
            LoginAttempt.address == address,
            limits.per_address,
            "from this address",
        ),
    )
    for where, allowed, what in checks:
        q = select(func.count(LoginAttempt.id), func.min(LoginAttempt.at)).where(where, LoginAttempt.at > since)
        count, oldest = session.execute(q).one()
        if count >= allowed:
            wait = _retry_after(oldest, limits.window_s, now)
            raise LoginRateLimited(f"too many failed logins {what}; try again in {wait} s", wait)


def record_failed_login(session: Session, limits: LoginLimits, username: str, address: str) -> None:
    """Keep the failure (and forget those older than the window, so the table stays small)."""
    now = utcnow()
    session.execute(delete(LoginAttempt).where(LoginAttempt.at <= now - timedelta(seconds=limits.window_s)))
    session.add(LoginAttempt(username=_attempt_key(username), address=address[:64], at=now))
    session.commit()


def login(session: Session, settings: AuthSettings, username: str, password: str, client: str) -> tuple[User, str]:
    """Check the password (rate-limited, see ``check_login_limits``); returns the user and a new session secret."""
    limits = LoginLimits.of(settings)
    check_login_limits(session, limits, username, client)
    user = find_user(session, username)
    if user is None:
        burn_time(password)
        ok = False
    else:
        ok = verify_password(password, user.password_hash)
    if not ok or user is None or user.disabled:
        record_failed_login(session, limits, username, client)
        raise UnauthenticatedError("wrong username or password" if not ok else f"user {username!r} is disabled")
    # A success forgets this pair's failures only: the per-address count of other names stays (spraying).
    session.execute(
        delete(LoginAttempt).where(LoginAttempt.username == _attempt_key(username), LoginAttempt.address == client)
    )
    user.last_login_at = utcnow()
    return user, new_session(session, user, settings)


def new_session(session: Session, user: User, settings: AuthSettings) -> str:
    """A new login session row for ``user`` (committed); returns the cookie secret."""
    now = utcnow()
    secret = new_secret()
    session.execute(delete(LoginSession).where(LoginSession.expires_at <= now))
    session.add(
        LoginSession(
            token_sha256=secret_digest(secret),
            user_id=user.id,
            expires_at=now + timedelta(hours=settings.session_hours),
        )
    )
    session.commit()
    return secret


def logout(session: Session, secret: str) -> None:
    session.execute(delete(LoginSession).where(LoginSession.token_sha256 == secret_digest(secret)))
    session.commit()


# --------------------------------------------------------------------------- tokens


def _holds(caller: Principal, site_id: int, role: Role) -> bool:
    if caller.admin:
        return True
    held = caller.roles.get(site_id)
    return held is not None and held.rank >= role.rank


def create_token(
    session: Session, caller: Principal, name: str, site: Site | None, role: Role, *, owner: User | None = None
) -> tuple[ApiToken, str]:
    """A new token (returns the row and its secret, shown once). Only hub admins make every-site tokens;
    others may make tokens for sites where they hold at least ``role``."""
    if caller.token_id is not None:  # a token never mints tokens: none may outlive its parent's revocation
        raise ForbiddenError(f"{caller.name!r}: an API token cannot create tokens; log in to make one")
    name = name.strip()
    if not (1 <= len(name) <= MAX_TOKEN_NAME):
        raise InvalidError(f"name={name!r} must be 1 to {MAX_TOKEN_NAME} characters")
    if site is None and not caller.admin:
        raise ForbiddenError(f"user {caller.name!r}: only hub administrators create every-site tokens")
    if site is not None and not _holds(caller, site.id, role):
        raise ForbiddenError(f"user {caller.name!r} needs the {role.value} role in site {site.name!r} to grant it")
    secret = new_secret()
    user_id = owner.id if owner is not None else caller.user_id
    token = ApiToken(
        name=name,
        token_sha256=secret_digest(secret),
        user_id=user_id,
        site_id=site.id if site else None,
        role=role.value,
    )
    session.add(token)
    session.commit()
    return token, secret


def list_tokens(session: Session, caller: Principal) -> list[ApiToken]:
    """Hub admins see every token; others their own and those of sites they administer."""
    q = select(ApiToken).order_by(ApiToken.id)
    if not caller.admin:
        admin_sites = [s for s, r in caller.roles.items() if r == Role.ADMIN]
        q = q.where((ApiToken.user_id == caller.user_id) | ApiToken.site_id.in_(admin_sites))
    return list(session.scalars(q))


def revoke_token(session: Session, caller: Principal, token_id: int) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFoundError(f"token id={token_id} not found")
    mine = caller.user_id is not None and token.user_id == caller.user_id
    site_admin = token.site_id is not None and _holds(caller, token.site_id, Role.ADMIN)
    if not (caller.admin or mine or site_admin):
        raise ForbiddenError(f"user {caller.name!r} may not revoke token id={token_id}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.commit()
    return token


def token_view(session: Session, token: ApiToken) -> dict[str, object]:
    site = session.get(Site, token.site_id) if token.site_id is not None else None
    owner = session.get(User, token.user_id) if token.user_id is not None else None
    return {
        "id": token.id,
        "name": token.name,
        "site": site.name if site else None,
        "role": token.role,
        "owner": owner.username if owner else None,
        "created_at": token.created_at,
        "last_used_at": token.last_used_at,
        "revoked_at": token.revoked_at,
    }


def user_view(session: Session, user: User, only_sites: list[int] | None = None) -> dict[str, object]:
    """A user for views; ``only_sites`` limits the roles shown to those sites (a site admin's view)."""
    roles = role_names(session, user.id, only_sites)
    return {
        "id": user.id,
        "username": user.username,
        "is_admin": user.is_admin,
        "disabled": user.disabled,
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
        "roles": roles,
    }
