"""Which verified bundle may become active: scope (site, classifier), version order, and signed rollbacks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from camfleet_contract.bundle import BundleError, Manifest, check_scope
from camfleet_contract.messages import ModelAnnouncement
from camfleet_contract.rollback import RollbackStatement, verify_rollback
from camfleet_contract.signing import SignatureError

from ..keys import FleetKeyError
from .errors import ModelUpdateError, TransientUpdateError
from .store import Trust

log = logging.getLogger(__name__)


def check_bundle_scope(manifest: Manifest, site: str, classifier: str) -> None:
    """The manifest names this site and classifier (or is the default bundle, for the default classifier)."""
    try:
        check_scope(manifest, site, classifier)
    except BundleError as exc:
        raise ModelUpdateError(str(exc)) from None


def admit(
    manifest: Manifest,
    classifier: str,
    announcement: ModelAnnouncement,
    trust: Trust,
    public_key: Callable[[], str],
) -> Trust:
    """Version rules on a verified, in-scope manifest; returns the trust state to persist once swapped.

    A version below the highest applied in this scope is a downgrade (a replayed announcement) unless the
    announcement carries a fleet-signed rollback naming it that withdraws at least that highest version and
    is newer than the last rollback accepted.
    """
    number = _version_number(manifest.version)
    scope = trust.get(manifest.site, {})
    highest = _stored_int(scope.get("highest"))
    withdrawn = _stored_int(scope.get("withdrawn_through"))  # a rollback withdrew every version up to this
    if number >= highest and number > withdrawn:
        return {**trust, manifest.site: {**scope, "highest": number}}
    statement = announcement.rollback
    if number > withdrawn or statement is not None:
        below = f"version {manifest.version} is below version {highest} already applied to {classifier}"
    else:
        below = f"version {manifest.version} of {classifier} was withdrawn by a signed rollback"
    if statement is None:
        raise ModelUpdateError(f"{below}; refused without a signed rollback naming it")
    _check_rollback(statement, manifest, classifier, below, highest, scope, public_key)
    replaces = int(statement.replaces)
    log.info("model %s: signed rollback to %s (withdraws up to %s)", classifier, manifest.version, replaces)
    return {
        **trust,
        manifest.site: {
            "highest": replaces,
            "withdrawn_through": replaces,
            "rollback_issued_at": statement.issued_at.isoformat(),
        },
    }


def _check_rollback(
    statement: RollbackStatement,
    manifest: Manifest,
    classifier: str,
    below: str,
    highest: int,
    scope: dict[str, object],
    public_key: Callable[[], str],
) -> None:
    """A rollback admits a lower version only when it names it, is fleet-signed, and is newer than the last."""
    if (statement.site, statement.classifier, statement.version) != (manifest.site, classifier, manifest.version):
        raise ModelUpdateError(
            f"{below}; the rollback names site={statement.site!r} classifier={statement.classifier!r} "
            f"version={statement.version!r} instead"
        )
    try:
        verify_rollback(statement, public_key())
    except SignatureError as exc:
        raise ModelUpdateError(f"{below}; its rollback statement is not signed by the fleet key: {exc}") from None
    except FleetKeyError as exc:
        raise TransientUpdateError(str(exc)) from None
    if int(statement.replaces) < highest:
        raise ModelUpdateError(f"{below}; the rollback withdraws versions up to {statement.replaces} only (an old one)")
    last = scope.get("rollback_issued_at")
    if isinstance(last, str) and statement.issued_at <= datetime.fromisoformat(last):
        raise ModelUpdateError(f"{below}; the rollback was issued at or before the last one accepted ({last})")


def _version_number(version: str) -> int:
    """Hub versions are whole numbers; a version the agent cannot order is one it cannot protect, so refused."""
    if not version.isascii() or not version.isdigit() or len(version) > 18:
        raise ModelUpdateError(f"version={version!r} is not a whole number, so it cannot be ordered")
    return int(version)


def _stored_int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
