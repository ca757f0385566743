"""Users, their site roles and the first hub administrator (who may do what: ``camfleet_hub.auth``)."""

from __future__ import annotations

import logging
import re
from typing import cast

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from camfleet_hub.auth.models import ApiToken, LoginSession, Role, SiteRole, User
from camfleet_hub.auth.passwords import hash_password, random_password, verify_password
from camfleet_hub.auth.principal import Principal
from camfleet_hub.auth.schemas import RoleName, UserPublic
from camfleet_hub.core.config import AuthSettings, reveal
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from camfleet_hub.datasets.models import Site

log = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


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


def visible_users(session: Session, caller: Principal) -> list[UserPublic]:
    """Users as ``user_view`` answers: every user with all roles for hub admins; for a site admin only users
    holding a role in a site they administer, with only those roles (other sites stay invisible)."""
    if caller.admin:
        return [user_view(session, u) for u in list_users(session)]
    admin_sites = sorted(s for s, r in caller.roles.items() if r == Role.ADMIN)
    if not admin_sites:
        raise ForbiddenError(f"user {caller.name!r} is not an administrator of the hub or of a site")
    q = select(User).join(SiteRole, SiteRole.user_id == User.id).where(SiteRole.site_id.in_(admin_sites))
    users = list(session.scalars(q.distinct().order_by(User.username)))
    return [user_view(session, u, admin_sites) for u in users]


def user_view(session: Session, user: User, only_sites: list[int] | None = None) -> UserPublic:
    """A user for views; ``only_sites`` limits the roles shown to those sites (a site admin's view)."""
    return UserPublic(
        id=user.id,
        username=user.username,
        is_admin=user.is_admin,
        disabled=user.disabled,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
        roles=cast(dict[str, RoleName], role_names(session, user.id, only_sites)),  # validated by UserPublic
    )


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


# --------------------------------------------------------------------------- site roles


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


# --------------------------------------------------------------------------- the first admin


def first_admin(session: Session, settings: AuthSettings) -> str | None:
    """Create ``admin_username`` when no user exists; returns the generated password (None: not created or set)."""
    if count_users(session) > 0:
        return None
    password = reveal(settings.admin_password) or random_password()
    create_user(session, settings.admin_username, password, is_admin=True)
    log.info("created the first hub administrator %r", settings.admin_username)
    return None if settings.admin_password else password
