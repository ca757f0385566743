"""A hub-signed rollback: the one way an agent accepts a model version below the highest it has applied.

Agents refuse older versions, so a replayed announcement cannot downgrade them. When people roll a classifier
back, the hub adds this statement to the announcement: "site S, classifier C: run version V; every version
above V up to R is withdrawn", signed with the fleet key. An agent accepts it only when R is at least the
highest version it has applied (an old statement cannot undo a later release) and it is newer than the last
rollback it accepted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .signing import SignatureError, sign, verify
from .topics import Name

# Domain separation: these bytes can never be a manifest, so neither signature can stand in for the other.
_CONTEXT = b"camfleet-rollback-v1\n"
_VERSION = r"^[0-9]{1,18}$"


class RollbackStatement(BaseModel):
    """Signed by the fleet key; travels in `ModelAnnouncement.rollback`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: Name
    classifier: Name
    version: str = Field(pattern=_VERSION, description="the version to run")
    replaces: str = Field(pattern=_VERSION, description="the highest version withdrawn by this rollback")
    issued_at: AwareDatetime
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")

    def signed_bytes(self) -> bytes:
        return _payload(self.site, self.classifier, self.version, self.replaces, self.issued_at)


def _payload(site: str, classifier: str, version: str, replaces: str, issued_at: datetime) -> bytes:
    body = {
        "site": site,
        "classifier": classifier,
        "version": version,
        "replaces": replaces,
        "issued_at": issued_at.astimezone(UTC).isoformat(),
    }
    return _CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_rollback(
    site: str, classifier: str, version: str, replaces: str, private_key_hex: str, issued_at: datetime | None = None
) -> RollbackStatement:
    """The statement for rolling `site`/`classifier` back to `version`, withdrawing everything up to `replaces`."""
    issued_at = issued_at or datetime.now(UTC)
    signature = sign(_payload(site, classifier, version, replaces, issued_at), private_key_hex)
    return RollbackStatement(
        site=site, classifier=classifier, version=version, replaces=replaces, issued_at=issued_at, signature=signature
    )


def verify_rollback(statement: RollbackStatement, public_key_hex: str) -> None:
    """Raises SignatureError unless the fleet key signed exactly this statement."""
    verify(statement.signed_bytes(), statement.signature, public_key_hex)


__all__ = ["RollbackStatement", "SignatureError", "sign_rollback", "verify_rollback"]
