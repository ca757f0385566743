"""What the ingest worker handles: queued messages, the batches they are committed in, and what to do on failure.

A message is an ``Item`` of one kind (frame, agent status, agent event) that validation fills with its decoded
form or a ``Rejection``; a ``Batch`` is the items committed (and acknowledged) together.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from camfleet_hub.core.comms.mqtt import Received
from camfleet_hub.core.store.base import DEAD_PREFIX, ObjectStore
from camfleet_hub.fleet.events import ValidEvent
from camfleet_hub.ingest.persist import FrameOutcome
from camfleet_hub.ingest.stats import IngestStats
from camfleet_hub.ingest.validate import Rejection, StatusUpdate, ValidFrame

log = logging.getLogger("camfleet_hub.ingest.worker")  # rejections stay in the worker's log (as before the split)

FRAME = "frame"
STATUS = "status"
EVENT = "event"


def infrastructure_error(exc: BaseException) -> bool:
    """Errors of the store, the database or the network, which retrying outlasts (unlike a message's own fault):
    OS errors (a full disk, a refused connection), SQLAlchemy's connection errors, and the S3 client's (see
    ``camfleet_hub.core.store.s3.is_infrastructure_error``: no connection, timeouts, 5xx / ``SlowDown``, 403)."""
    from sqlalchemy.exc import InterfaceError, OperationalError
    from urllib3.exceptions import HTTPError

    if isinstance(exc, OSError | OperationalError | InterfaceError | HTTPError):
        return True
    if type(exc).__module__.startswith("botocore"):  # only then load boto3 (a directory store never raises these)
        from camfleet_hub.core.store.s3 import is_infrastructure_error

        return is_infrastructure_error(exc)
    return False


@dataclass
class Item:
    """A queued message and what the worker decided about it."""

    kind: str
    msg: Received
    frame: ValidFrame | None = None
    status: StatusUpdate | None = None
    event: ValidEvent | None = None
    rejection: Rejection | None = None


@dataclass
class Batch:
    """The messages handled (and acknowledged) together."""

    items: list[Item]
    events_new: int = 0
    events_seen: int = 0


def keep_dead_payload(store: ObjectStore, keep: int, payload: bytes, detail: str) -> tuple[str | None, str]:
    """Store only the first ``keep`` bytes of a rejected payload (``dead_letters.keep_bytes``); the detail names
    the whole one."""
    kept = payload[:keep]
    sha = store.put(kept, DEAD_PREFIX) if kept else None
    if len(payload) > keep:
        whole = hashlib.sha256(payload).hexdigest()
        detail = f"{detail[:1800]} [payload {len(payload)} bytes, sha256={whole}; first {keep} bytes kept]"
    return sha, detail


def count_batch(stats: IngestStats, batch: Batch, outcome: FrameOutcome) -> None:
    """Update counters and log rejections, after the commit succeeded."""
    accepted = len(outcome.inserted)
    duplicates = sum(1 for i in batch.items if i.frame is not None and i.rejection is None) - accepted
    if accepted:
        stats.add_accepted(accepted)
    if duplicates:
        stats.add_duplicate(duplicates)
    for item in batch.items:
        if item.rejection is not None:
            stats.add_rejected(item.rejection.reason)
            log.warning(
                "ingest rejected %s (%d bytes): %s: %s",
                item.msg.topic,
                len(item.msg.payload),
                item.rejection.reason,
                item.rejection.detail,
            )
        elif item.kind == STATUS:
            stats.add_status()
    if batch.events_seen:
        stats.add_events(batch.events_new, batch.events_seen - batch.events_new)
