"""Durable outbox: every event and uploaded frame is written to SQLite before it is sent, deleted on PUBACK.

So a broker outage, or the agent killed with SIGKILL, loses nothing already queued: the rows are sent in
order (by row id) once the broker is back, or when the agent restarts. The queue is bounded in bytes; when
full it evicts in a stated order, least valuable first: sampled frames, then other frames, events last.
A message is never evicted to make room for a less valuable one (the newcomer is dropped instead).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Priority = Literal["sampled", "frame", "event"]
PRIORITY_RANK: dict[Priority, int] = {"sampled": 0, "frame": 1, "event": 2}
"""Eviction order: the lowest rank goes first."""

DropCause = Literal["outbox_full", "disk_error"]
ERROR_LOG_INTERVAL_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_rank ON outbox (rank, id);
"""


@dataclass(frozen=True)
class OutboxItem:
    id: int
    topic: str
    payload: bytes
    qos: int


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    bytes: int
    dropped: dict[str, int]  # "<cause>_<priority>" → count, e.g. "outbox_full_sampled"


class Outbox:
    """A bounded, ordered, on-disk queue shared by the pipelines (writers) and the MQTT sender (reader).

    >>> box = Outbox(Path("var/agent/outbox.sqlite"), max_bytes=256 << 20)
    >>> box.put("camfleet/v1/shop/door/event", b"{...}", "event")
    >>> [item.id for item in box.peek(100)]
    """

    def __init__(self, path: Path, max_bytes: int, file_limit_bytes: int | None = None) -> None:
        """`file_limit_bytes` caps the SQLite file itself (SQLite then fails as on a full disk: tests)."""
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        # WAL + NORMAL: a committed row survives the process being killed (not a power cut: the OS has it).
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        if file_limit_bytes is not None:
            page = int(self._db.execute("PRAGMA page_size").fetchone()[0])
            self._db.execute(f"PRAGMA max_page_count = {max(1, file_limit_bytes // page)}")
        depth, size = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        self._depth = int(depth)
        self._bytes = int(size)
        self._dropped: dict[str, int] = {}
        self._last_error_log = 0.0
        self._inflight: frozenset[int] = frozenset()
        self.changed = threading.Event()  # set on every put: wakes the sender
        if self._depth:
            log.info("outbox: %d message(s), %d bytes queued from before the restart", self._depth, self._bytes)
            self.changed.set()

    def put(self, topic: str, payload: bytes, priority: Priority, qos: int = 1) -> bool:
        """Queue a message; False when it was dropped (counted by cause) because no room could be made."""
        size = len(payload) + len(topic)
        rank = PRIORITY_RANK[priority]
        with self._lock:
            try:
                if self._bytes + size > self.max_bytes and not self._make_room(size, rank):
                    self._count("outbox_full", priority)
                    return False
                self._db.execute(
                    "INSERT INTO outbox (topic, payload, qos, rank, size) VALUES (?, ?, ?, ?, ?)",
                    (topic, payload, qos, rank, size),
                )
            except sqlite3.Error as exc:  # disk full, read-only file system, corrupt file: drop, never crash
                self._count("disk_error", priority)
                self._log_error(f"outbox: could not queue a message for {topic}: {exc}")
                return False
            self._depth += 1
            self._bytes += size
        self.changed.set()
        return True

    def _make_room(self, size: int, rank: int) -> bool:
        """Evict rows of rank <= `rank`, lowest rank and oldest first, until `size` more bytes fit."""
        if size > self.max_bytes:
            return False
        need = self._bytes + size - self.max_bytes
        victims: list[tuple[int, int, int]] = []
        freed = 0
        rows = self._db.execute("SELECT id, rank, size FROM outbox WHERE rank <= ? ORDER BY rank, id", (rank,))
        for row_id, row_rank, row_size in rows:
            if row_id in self._inflight:
                continue
            victims.append((row_id, row_rank, row_size))
            freed += row_size
            if freed >= need:
                break
        if freed < need:
            return False
        self._db.execute("BEGIN")
        self._db.executemany("DELETE FROM outbox WHERE id = ?", [(v[0],) for v in victims])
        self._db.execute("COMMIT")
        names = {r: p for p, r in PRIORITY_RANK.items()}
        for _row_id, row_rank, row_size in victims:
            self._depth -= 1
            self._bytes -= row_size
            self._count("outbox_full", names[row_rank])
        log.warning("outbox: full (%d bytes); evicted %d older message(s)", self.max_bytes, len(victims))
        return True

    def mark_inflight(self, ids: set[int]) -> None:
        """Rows handed to the MQTT client and not yet acknowledged: never evicted (the client resends them)."""
        with self._lock:
            self._inflight = frozenset(ids)

    def peek(self, limit: int, after: int = 0) -> list[OutboxItem]:
        """The oldest `limit` rows with an id above `after` (the last row handed to the client), in send order."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT id, topic, payload, qos FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
                ).fetchall()
            except sqlite3.Error as exc:
                self._log_error(f"outbox: could not read: {exc}")
                return []
        return [OutboxItem(int(r[0]), str(r[1]), bytes(r[2]), int(r[3])) for r in rows]

    def ack(self, row_id: int) -> None:
        """The broker acknowledged the message: forget it."""
        with self._lock:
            try:
                row = self._db.execute("SELECT size FROM outbox WHERE id = ?", (row_id,)).fetchone()
                if row is None:
                    return
                self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            except sqlite3.Error as exc:
                self._log_error(f"outbox: could not delete an acknowledged message: {exc}")
                return
            self._depth -= 1
            self._bytes -= int(row[0])

    def stats(self) -> OutboxStats:
        with self._lock:
            return OutboxStats(depth=self._depth, bytes=self._bytes, dropped=dict(self._dropped))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _count(self, cause: DropCause, priority: Priority) -> None:
        key = f"{cause}_{priority}"
        self._dropped[key] = self._dropped.get(key, 0) + 1

    def _log_error(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.error("%s", message)
