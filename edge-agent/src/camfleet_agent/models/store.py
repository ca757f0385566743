"""A classifier's state on disk: the active and previous versions, the trust high-water marks, old versions."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

from ..keys import write_atomic
from .errors import ModelUpdateError

log = logging.getLogger(__name__)

ACTIVE_FILE = "active.json"
TRUST_FILE = "trust.json"
TMP_SUFFIX = ".tmp"

Trust = dict[str, dict[str, object]]  # scope (site) → {"highest": 7, "withdrawn_through": …, …}


def read_state(clf_dir: Path) -> dict[str, object]:
    """active.json, or {} when missing or unreadable (logged): the agent then starts without that model."""
    path = clf_dir / ACTIVE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.error("%s is unreadable (%s); ignoring it", path, exc)
        return {}
    return state if isinstance(state, dict) else {}


def write_state(clf_dir: Path, version: str, previous: str | None) -> None:
    state = {"version": version, "previous": previous, "activated_at": datetime.now(UTC).isoformat()}
    write_atomic(clf_dir / ACTIVE_FILE, json.dumps(state, indent=2).encode())


def clear_state(clf_dir: Path) -> None:
    (clf_dir / ACTIVE_FILE).unlink(missing_ok=True)


def read_trust(clf_dir: Path) -> Trust:
    path = clf_dir / TRUST_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        # Losing the high-water mark would let a replay downgrade: refuse updates until someone looks.
        raise ModelUpdateError(f"{path} is unreadable ({exc}); fix or remove it to accept updates") from None
    if not isinstance(state, dict) or not all(isinstance(v, dict) for v in state.values()):
        raise ModelUpdateError(f"{path} is not a trust state; fix or remove it to accept updates")
    return state


def write_trust(clf_dir: Path, trust: Trust) -> None:
    write_atomic(clf_dir / TRUST_FILE, json.dumps(trust, indent=2, sort_keys=True).encode())


def prune(clf_dir: Path, keep: set[str | None]) -> None:
    """Delete versions other than the active and previous ones, and stray temp dirs."""
    for path in clf_dir.iterdir():
        if path.is_dir() and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
            log.info("model %s: removed old version %s", clf_dir.name, path.name)
