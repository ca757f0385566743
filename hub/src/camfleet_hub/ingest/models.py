"""SQL table of dead letters: messages ingest refused, with why and a bounded prefix."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from camfleet_hub.core.db.base import SHA256_LEN, Base
from camfleet_hub.core.db.types import utcnow


class DeadLetter(Base):
    """A rejected ingest message; its payload is kept in the store under ``dead/`` so nothing is lost."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    topic: Mapped[str] = mapped_column(String(512))
    reason: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    size: Mapped[int] = mapped_column(Integer)
    payload_sha256: Mapped[str | None] = mapped_column(String(SHA256_LEN), default=None)
