"""API tokens: create, list, revoke, and their answers.

A token carries a role and a site (NULL = every site; only hub admins create those). Its power is capped by its
owner's current rights (``callers.caller_of_token``). The secret is shown once; the database keeps its sha256.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_hub.auth.models import ApiToken, Role, User
from camfleet_hub.auth.passwords import new_secret, secret_digest
from camfleet_hub.auth.principal import Principal
from camfleet_hub.auth.schemas import RoleName, TokenCreated, TokenPublic
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import ForbiddenError, InvalidError, NotFoundError
from camfleet_hub.datasets.models import Site

MAX_TOKEN_NAME = 128


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


def token_view(session: Session, token: ApiToken) -> TokenPublic:
    site = session.get(Site, token.site_id) if token.site_id is not None else None
    owner = session.get(User, token.user_id) if token.user_id is not None else None
    return TokenPublic(
        id=token.id,
        name=token.name,
        site=site.name if site else None,
        role=cast(RoleName, token.role),  # a CHECK constraint keeps it one of them; TokenPublic validates too
        owner=owner.username if owner else None,
        created_at=token.created_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )


def created_view(session: Session, token: ApiToken, secret: str) -> TokenCreated:
    """A new token's answer: its view and the secret, shown this once."""
    return TokenCreated(**token_view(session, token).model_dump(), token=secret)
