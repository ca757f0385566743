"""REST bodies of login, users, site roles and API tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from camfleet_hub.core.schemas import Public, Request

RoleName = Literal["admin", "labeller", "viewer"]


class LoginRequest(Request):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserPublic(Public):
    id: int
    username: str
    is_admin: bool = Field(description="hub-wide administrator: every site, users, every-site tokens")
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None = None
    roles: dict[str, RoleName] = Field(default_factory=dict, description="role per site name")


class MePublic(Public):
    name: str = Field(description="the username, or 'token:<name>' for an API token")
    user_id: int | None = None
    is_admin: bool
    roles: dict[str, RoleName] = Field(default_factory=dict, description="role per site name")
    every_site: RoleName | None = Field(default=None, description="an every-site token's role in each site")


class UserCreate(Request):
    username: str = Field(description="1-64 letters, digits, '.', '_', '@' or '-'")
    password: str = Field(min_length=8, max_length=1024)
    is_admin: bool = False


class UserUpdate(Request):
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    current_password: str | None = Field(
        default=None, max_length=1024, description="required when changing your own password"
    )
    disabled: bool | None = None
    is_admin: bool | None = None


class SiteRoleSet(Request):
    role: RoleName | None = Field(description="the user's role in the site; null removes it")


class TokenCreate(Request):
    name: str = Field(min_length=1, max_length=128, description="what the token is for, e.g. 'agent shop-1'")
    site: str | None = Field(default=None, description="the one site it may act in; null = every site (hub admins)")
    role: RoleName = "viewer"


class TokenPublic(Public):
    id: int
    name: str
    site: str | None = None
    role: RoleName
    owner: str | None = None
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class TokenCreated(TokenPublic):
    token: str = Field(description="the secret: send as 'Authorization: Bearer <token>'; shown only this once")
