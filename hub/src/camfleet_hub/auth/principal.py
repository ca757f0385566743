"""Who is calling, and the role checks every route asks of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from camfleet_hub.auth.models import Role
from camfleet_hub.core.errors import ForbiddenError


@dataclass(frozen=True)
class Principal:
    """Who is calling: a logged-in user or an API token, with a role per site id (``admin``: every site).

    With ``auth.enabled = false`` every caller is the anonymous administrator (the default values).
    ``token_id`` / ``session_id`` say which credential it came with (account routes want a session).
    """

    name: str = "anonymous"
    admin: bool = True
    user_id: int | None = None
    roles: Mapping[int, Role] = field(default_factory=dict)
    token_id: int | None = None
    session_id: int | None = None

    def role_in(self, site_id: int) -> Role | None:
        """The caller's role in that site (hub admins are admins everywhere)."""
        return Role.ADMIN if self.admin else self.roles.get(site_id)

    def require(self, site_id: int, role: Role, site_name: str = "") -> None:
        """Raise 403 unless the caller holds ``role`` (or a stronger one) in the site."""
        held = self.role_in(site_id)
        if held is None or held.rank < role.rank:
            where = f"site {site_name!r}" if site_name else f"site id={site_id}"
            raise ForbiddenError(f"user {self.name!r} needs the {role.value} role in {where}")

    def require_admin(self) -> None:
        """Raise 403 unless the caller is a hub-wide administrator."""
        if not self.admin:
            raise ForbiddenError(f"user {self.name!r} is not a hub administrator")
