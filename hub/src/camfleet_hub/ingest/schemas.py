"""REST bodies of the ingest counters and dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from camfleet_hub.core.schemas import Public


class IngestStats(Public):
    worker: dict[str, Any] = Field(description="counters of this process's ingest worker since it started")
    frames: int = Field(description="frames stored in the database")
    dead_letters: int = Field(description="rejected messages recorded in the database")
    dead_letters_by_reason: dict[str, int]


class DeadLetterPublic(Public):
    id: int
    received_at: datetime
    topic: str
    reason: str
    detail: str
    size: int
    payload_sha256: str | None = None
