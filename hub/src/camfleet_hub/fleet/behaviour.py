"""A model version's behaviour after a swap, as agents report it (AgentStatus.first_frames), and the jump flag.

Every status stores, per agent, classifier and version, the anomaly rate and mean confidence over the version's
first frames on that agent. A version is flagged on an agent when its anomaly rate jumps against the version that
agent ran before: at least ``JUMP_FACTOR`` × the previous rate *and* ``JUMP_POINTS`` above it (a doubling of 1 %
is noise, +10 points from 40 % is not a new failure mode), and only once enough frames back the figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_contract.messages import AgentStatus
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.fleet.models import ModelBehaviour

JUMP_FACTOR = 2.0  # the new version's anomaly rate ≥ this × the previous one's ...
JUMP_POINTS = 0.10  # ... and ≥ this much (absolute share) above it
JUMP_MIN_FRAMES = 20  # fewer first frames (and the count not complete): too early to say


@dataclass(frozen=True)
class Figures:
    version: str
    since: datetime
    frames: int
    anomaly_rate: float
    mean_confidence: float
    complete: bool


@dataclass(frozen=True)
class Jump:
    """``version`` flags far more frames as anomalous on ``agent`` than ``previous`` did there."""

    agent: str
    classifier: str
    version: str
    previous: str
    anomaly_rate: float
    previous_rate: float
    frames: int

    @property
    def text(self) -> str:
        return (
            f"{self.classifier} v{self.version}: anomaly rate {self.anomaly_rate:.0%} over its first {self.frames} "
            f"frames, was {self.previous_rate:.0%} with v{self.previous}"
        )


def record(session: Session, site_id: int, status: AgentStatus) -> None:
    """Store the figures of an agent's status (the previous version's too); a newer swap to a version replaces
    the figures of an older one, an older replayed status changes nothing."""
    for classifier, behaviour in status.first_frames.items():
        for ff in (behaviour.previous, behaviour.current):
            if ff is None:
                continue
            row = session.scalar(
                select(ModelBehaviour).where(
                    ModelBehaviour.site_id == site_id,
                    ModelBehaviour.agent == status.agent,
                    ModelBehaviour.classifier == classifier,
                    ModelBehaviour.version == ff.version,
                )
            )
            if row is None:
                row = ModelBehaviour(site_id=site_id, agent=status.agent, classifier=classifier, version=ff.version)
                session.add(row)
            elif ff.since < row.since or (ff.since == row.since and ff.frames < row.frames):
                continue
            row.since, row.frames, row.complete = ff.since, ff.frames, ff.complete
            row.anomaly_rate, row.mean_confidence = ff.anomaly_rate, ff.mean_confidence
            row.updated_at = utcnow()
    session.flush()


def reported(session: Session, site_id: int, classifier: str) -> dict[str, list[Figures]]:
    """Per agent, the versions it reported for ``classifier``, newest swap first."""
    out: dict[str, list[Figures]] = {}
    rows = session.scalars(
        select(ModelBehaviour)
        .where(ModelBehaviour.site_id == site_id, ModelBehaviour.classifier == classifier)
        .order_by(ModelBehaviour.agent, ModelBehaviour.since.desc(), ModelBehaviour.id.desc())
    )
    for r in rows:
        out.setdefault(r.agent, []).append(
            Figures(r.version, r.since, r.frames, r.anomaly_rate, r.mean_confidence, r.complete)
        )
    return out


def is_jump(new: Figures, old: Figures) -> bool:
    if not new.complete and new.frames < JUMP_MIN_FRAMES:
        return False
    return new.anomaly_rate >= JUMP_FACTOR * old.anomaly_rate and new.anomaly_rate - old.anomaly_rate >= JUMP_POINTS


def jumps(session: Session, site_id: int, classifier: str) -> list[Jump]:
    """Agents whose latest version of ``classifier`` jumped against the version they ran before it."""
    out = []
    for agent, versions in sorted(reported(session, site_id, classifier).items()):
        if len(versions) < 2:
            continue
        new, old = versions[0], versions[1]
        if is_jump(new, old):
            out.append(
                Jump(agent, classifier, new.version, old.version, new.anomaly_rate, old.anomaly_rate, new.frames)
            )
    return out
