"""Dead letters are bounded: a payload prefix, its size and hash, capped rows per topic and in total, an age limit.

Any publisher can send garbage; before, every rejected payload was kept whole and forever.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

from hubcore_helpers import wait_for
from sqlalchemy import func, select, update
from test_ingest import Rig, make_rig

from camfleet_hub.core.config import DeadLetterSettings
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.store import DEAD_PREFIX
from camfleet_hub.ingest.models import DeadLetter

PAYLOAD = 64 * 1024
KEEP = 1024


def _bad(n: int) -> bytes:
    """Not a frame envelope; distinct from the first byte so every prefix is its own object."""
    return f"garbage {n:06d} ".encode() + bytes([n % 251]) * (PAYLOAD - 15)


def _dead_bytes(rig: Rig, root: Path) -> int:
    return sum(p.stat().st_size for p in (root / DEAD_PREFIX).rglob("*") if p.is_file())


def test_many_bad_payloads_leave_a_bounded_table_and_store(tmp_path: Path, engine, mosquitto) -> None:  # type: ignore[no-untyped-def]
    with make_rig(tmp_path, engine, mosquitto.host, mosquitto.port) as rig:
        rig.settings.dead_letters = DeadLetterSettings(keep_bytes=KEEP, max_rows=12, max_rows_per_topic=5)
        topics = [rig.topics.frame("shop", "cam1")] * 20 + [rig.topics.frame("shop", "cam2")] * 20
        topics += [rig.topics.frame("shop", f"x{i}") for i in range(20)]  # many topics: only the total cap holds
        for n, topic in enumerate(topics):
            rig.publish(topic, _bad(n))
        wait_for(lambda: rig.stats.snapshot().rejected_total == len(topics), "every bad payload rejected")

        with rig.sessions() as s:
            rows = s.execute(select(DeadLetter).order_by(DeadLetter.id)).scalars().all()
            per_topic = dict(s.execute(select(DeadLetter.topic, func.count()).group_by(DeadLetter.topic)).all())
        assert len(rows) <= 12
        assert max(per_topic.values()) <= 5
        assert rows[-1].topic == topics[-1]  # the newest are kept, the oldest dropped
        for row in rows:
            assert row.size == PAYLOAD
            kept = rig.store.get(row.payload_sha256, prefix=DEAD_PREFIX)
            assert len(kept) == KEEP and kept.startswith(b"garbage ")
            n = int(kept.split(b" ")[1])
            whole = hashlib.sha256(_bad(n)).hexdigest()
            assert f"sha256={whole}" in row.detail and f"{PAYLOAD} bytes" in row.detail
        # the dropped rows' objects are gone too: the store holds one prefix per row left
        assert _dead_bytes(rig, tmp_path / "objects") == len(rows) * KEEP

        # age retention: a row older than dead_letters.retention_days goes at the next rejection
        oldest = rows[0].id
        with rig.sessions() as s:
            s.execute(
                update(DeadLetter).where(DeadLetter.id == oldest).values(received_at=utcnow() - timedelta(days=30))
            )
            s.commit()
        rig.publish(rig.topics.frame("shop", "late"), _bad(999))
        wait_for(lambda: rig.stats.snapshot().rejected_total == len(topics) + 1, "one more rejected")
        with rig.sessions() as s:
            assert s.get(DeadLetter, oldest) is None
