"""Which agent owns a camera: the agent whose hub settings name it (``fleet.service.assign_cameras``), else the
first whose status names it (trust on first use), kept until a site admin releases or reassigns it. Ingest
refuses a frame or event of an owned camera from any other agent, and the brokers refuse the other agents'
publishes on its topics (``core/comms/acl.py``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from camfleet_hub.datasets.models import Camera, Site

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 2.0


def claim(session: Session, site_id: int, agent: str, cameras: Iterable[str]) -> None:
    """Make ``agent`` the owner of those of ``cameras`` (already stored) that have no owner; owned ones keep theirs."""
    names = sorted(set(cameras))
    if names:
        stmt = update(Camera).where(Camera.site_id == site_id, Camera.name.in_(names), Camera.agent.is_(None))
        session.execute(stmt.values(agent=agent))


def owners(session: Session, pairs: Collection[tuple[str, str]] | None = None) -> dict[tuple[str, str], str]:
    """``{(site, camera): agent}`` of every owned camera, or of those among ``pairs``."""
    query = select(Site.name, Camera.name, Camera.agent).join(Site, Site.id == Camera.site_id)
    query = query.where(Camera.agent.is_not(None))
    if pairs is not None:
        query = query.where(Site.name.in_({s for s, _ in pairs}), Camera.name.in_({c for _, c in pairs}))
    found = {(site, camera): agent for site, camera, agent in session.execute(query) if agent is not None}
    return found if pairs is None else {k: v for k, v in found.items() if k in pairs}


def mismatch(camera: str, owner: str | None, agent: str) -> str | None:
    """Why a message of ``agent`` for ``camera`` is refused, or None when the camera is unowned or the agent's."""
    if owner is None or owner == agent:
        return None
    return f"camera {camera!r} belongs to agent {owner!r}, not {agent!r}"


class OwnerCache:
    """The owners, re-read from the database at most every ``ttl_s``: the embedded broker asks on every PUBLISH.

    ``owner`` never queries; the broker calls ``refresh_if_stale`` off its event loop. A failed read keeps the last
    known owners (logged), so a database outage neither opens nor closes cameras.
    """

    def __init__(self, sessions: sessionmaker[Session], ttl_s: float = DEFAULT_TTL_S) -> None:
        self._sessions = sessions
        self.ttl_s = ttl_s
        self._owners: dict[tuple[str, str], str] = {}
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def stale(self) -> bool:
        return time.monotonic() - self._read_at >= self.ttl_s

    def refresh_if_stale(self) -> None:
        if not self.stale() or not self._lock.acquire(blocking=False):
            return  # fresh, or another thread is reading them now
        try:
            with self._sessions() as session:
                self._owners = owners(session)
        except Exception:  # noqa: BLE001 - keep the last known owners
            log.exception("camera owners: could not read them; keeping the last known ones")
        finally:
            self._read_at = time.monotonic()
            self._lock.release()

    def owner(self, site: str, camera: str) -> str | None:
        return self._owners.get((site, camera))
