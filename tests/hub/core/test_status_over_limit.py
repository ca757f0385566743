"""An agent whose statuses name more cameras than it may own: warned about once per set of left-out cameras, not on
every status (they come every few seconds)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hubcore_helpers import unique
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from camfleet_contract.agent_config import MAX_AGENT_CAMERAS
from camfleet_contract.messages import AgentStatus
from camfleet_hub.core.db.session import make_engine, make_sessionmaker, migrate
from camfleet_hub.datasets.models import Camera, Site
from camfleet_hub.ingest import persist
from camfleet_hub.ingest.validate import StatusUpdate


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(sqlite_url)
    migrate(engine)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def _status(sessions: sessionmaker[Session], agent: str, *cameras: str) -> None:
    status = AgentStatus(state="online", site="shop", agent=agent, ts=datetime.now(UTC), cameras=list(cameras))
    with sessions() as s:
        assert persist.apply_status(s, StatusUpdate("shop", agent, status))
        s.commit()


def test_over_the_limit_is_warned_once_per_left_out_set(
    sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    agent = unique("edge-")  # the warnings' memory lives as long as the process: a name no other test used
    with sessions() as s:
        shop = Site(name="shop")
        s.add(shop)
        s.flush()
        s.add_all(Camera(site_id=shop.id, name=f"c{i:03d}", agent=agent) for i in range(MAX_AGENT_CAMERAS))
        s.commit()
    caplog.set_level(logging.WARNING, logger=persist.__name__)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]

    _status(sessions, agent, "c000", "x1", "x2")
    _status(sessions, agent, "c000", "x1", "x2")  # the same status again: nothing new to say
    assert len(warnings()) == 1 and "x1, x2" in warnings()[0] and repr(agent) in warnings()[0]
    _status(sessions, agent, "c000", "x1", "x3")  # another camera left out: said again
    assert len(warnings()) == 2 and "x1, x3" in warnings()[1]
    _status(sessions, agent, "c000")  # nothing left out ...
    _status(sessions, agent, "c000", "x1", "x3")  # ... then the same two again: a change, said again
    assert len(warnings()) == 3
    with sessions() as s:  # still left out, never stored
        assert s.scalar(select(func.count()).where(Camera.agent == agent)) == MAX_AGENT_CAMERAS
        assert not s.scalars(select(Camera.name).where(Camera.name.in_(["x1", "x2", "x3"]))).all()


def test_the_memory_of_warnings_is_bounded() -> None:
    memory = persist.LeftOutWarnings(size=2)
    assert memory.changed("shop", "a1", ["x"]) and not memory.changed("shop", "a1", ["x"])
    assert memory.changed("shop", "a2", ["x"]) and memory.changed("shop", "a3", ["x"])  # a1 is forgotten
    assert memory.changed("shop", "a1", ["x"])  # ... so warned about again, and a2 forgotten in turn
    assert not memory.changed("shop", "a3", ["x"]) and memory.changed("shop", "a2", ["x"])
    assert not memory.changed("shop", "a2", []) and memory.changed("shop", "a2", ["x"])  # cleared, then again
