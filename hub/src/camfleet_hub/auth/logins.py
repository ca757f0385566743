"""Log in and out: login sessions (cookie secrets), the failed-login rate limit and the sessions' CSRF tokens.

Failed logins are rows in SQL (every hub process sees them), limited per username, per address and per pair.
The session cookie's secret is shown once; the database keeps its sha256.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from camfleet_hub.auth.models import LoginAttempt, LoginSession, User
from camfleet_hub.auth.passwords import burn_time, new_secret, secret_digest, verify_password
from camfleet_hub.auth.users import find_user
from camfleet_hub.core.config import AuthSettings
from camfleet_hub.core.db.base import NAME_LEN
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import RateLimitedError, UnauthenticatedError


class LoginRateLimited(RateLimitedError):
    """Too many failed logins; ``retry_after_s`` is when the oldest failure leaves the window."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


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


def csrf_token(session_secret: str) -> str:
    """The session's CSRF token: derived from the cookie secret, so it needs no storage, changes with every
    login and cannot be computed by a page that does not hold the (HttpOnly) cookie."""
    return hmac.new(session_secret.encode(), b"camfleet-csrf-v1", hashlib.sha256).hexdigest()


def csrf_matches(session_secret: str, sent: str) -> bool:
    return hmac.compare_digest(csrf_token(session_secret), sent)
