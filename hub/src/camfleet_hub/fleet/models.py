"""SQL tables of the fleet domain: stored events, per-site fleet settings, agent settings history, commands.

Registered on the hub's ``Base.metadata`` through ``core.db.tables``, so Alembic and the schema test see
them; migration ``0006_fleet`` creates them on SQLite and PostgreSQL alike.
Names of cameras, agents and classifiers are stored as text, not as foreign keys: an event of a camera that the
hub has not registered (yet) is still history worth keeping, and a renamed classifier keeps its old events.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from camfleet_hub.core.db.base import NAME_LEN, Base
from camfleet_hub.core.db.types import utcnow

if TYPE_CHECKING:
    from camfleet_hub.datasets.models import Site


# 64-bit ids on PostgreSQL (events are many); SQLite's INTEGER PRIMARY KEY is already 64-bit and must stay INTEGER.
EventId = BigInteger().with_variant(Integer(), "sqlite")
DEFAULT_RETENTION_DAYS = 30


class FleetEvent(Base):
    """One agent event (one classification of one frame by one classifier) with its full predictions."""

    __tablename__ = "fleet_events"
    __table_args__ = (
        # Every query is "a site, a time range, maybe one more filter, newest first": one index per filter.
        Index("ix_fleet_events_site_id_ts", "site_id", "ts"),
        Index("ix_fleet_events_site_id_camera_ts", "site_id", "camera", "ts"),
        Index("ix_fleet_events_site_id_classifier_ts", "site_id", "classifier", "ts"),
        Index("ix_fleet_events_site_id_label_ts", "site_id", "label", "ts"),
        Index("ix_fleet_events_site_id_anomaly_ts", "site_id", "anomaly", "ts"),
    )

    id: Mapped[int] = mapped_column(EventId, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)  # redelivery is a no-op
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    camera: Mapped[str] = mapped_column(String(NAME_LEN))
    agent: Mapped[str] = mapped_column(String(NAME_LEN))
    classifier: Mapped[str] = mapped_column(String(NAME_LEN))
    model_version: Mapped[str] = mapped_column(String(64))
    frame_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column()
    label: Mapped[str] = mapped_column(String(200))
    probability: Mapped[float] = mapped_column(Float)
    anomaly: Mapped[bool] = mapped_column(Boolean)
    anomaly_score: Mapped[float] = mapped_column(Float)
    motion: Mapped[float | None] = mapped_column(Float, default=None)
    latency_ms: Mapped[float] = mapped_column(Float)
    predictions: Mapped[list[Any]] = mapped_column(default=list)


class FleetSiteSettings(Base):
    """Fleet options of one site (a row only once someone changed a default)."""

    __tablename__ = "fleet_site_settings"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)
    event_retention_days: Mapped[int] = mapped_column(Integer, default=DEFAULT_RETENTION_DAYS)
    homeassistant: Mapped[bool] = mapped_column(Boolean, default=True)


class AgentConfigVersion(Base):
    """One version of an agent's settings (cameras, classifiers and regions, gate, upload rules); never updated."""

    __tablename__ = "fleet_agent_configs"
    __table_args__ = (UniqueConstraint("site_id", "agent", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(NAME_LEN))
    version: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column()  # AgentConfig as JSON
    created_by: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FleetCommand(Base):
    """A command the hub sent to an agent, and the agent's reply once it came."""

    __tablename__ = "fleet_commands"
    __table_args__ = (Index("ix_fleet_commands_site_id_agent", "site_id", "agent"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    command_id: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(NAME_LEN))
    command: Mapped[str] = mapped_column(String(32))
    camera: Mapped[str | None] = mapped_column(String(NAME_LEN), default=None)
    sent_by: Mapped[str] = mapped_column(String(NAME_LEN))
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    result: Mapped[str | None] = mapped_column(String(16), default=None)  # ok | error; None: no reply yet
    message: Mapped[str | None] = mapped_column(Text, default=None)
    replied_at: Mapped[datetime | None] = mapped_column(default=None)


class Rollout(Base):
    """The rollout state of one classifier: the version being staged (if any), to whom, and the highest version
    ever staged (a later rollback must withdraw it on the agents that ran it)."""

    __tablename__ = "fleet_rollouts"

    classifier_id: Mapped[int] = mapped_column(ForeignKey("classifiers.id", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"), default=None)
    agents: Mapped[list[Any]] = mapped_column(default=list)  # agent names staged by name
    percent: Mapped[int] = mapped_column(Integer, default=0)  # and this share of the site's agents
    highest_staged: Mapped[int] = mapped_column(Integer, default=0)
    updated_by: Mapped[str] = mapped_column(String(NAME_LEN))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Pin(Base):
    """An agent held on one version of a classifier, whatever is promoted or staged."""

    __tablename__ = "fleet_pins"
    __table_args__ = (UniqueConstraint("classifier_id", "agent"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    classifier_id: Mapped[int] = mapped_column(ForeignKey("classifiers.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(NAME_LEN))
    model_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    created_by: Mapped[str] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelBehaviour(Base):
    """What one agent reported of one model version's first frames after it swapped to it (AgentStatus
    .first_frames): kept per agent and version, so the comparison with the version before survives a restart of
    the agent (which forgets the previous version's figures)."""

    __tablename__ = "fleet_model_behaviour"
    __table_args__ = (UniqueConstraint("site_id", "agent", "classifier", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(NAME_LEN))
    classifier: Mapped[str] = mapped_column(String(NAME_LEN))
    version: Mapped[str] = mapped_column(String(64))
    since: Mapped[datetime] = mapped_column()  # when the agent first classified with it
    frames: Mapped[int] = mapped_column(Integer)
    anomaly_rate: Mapped[float] = mapped_column(Float)
    mean_confidence: Mapped[float] = mapped_column(Float)
    complete: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentState(StrEnum):
    """Agent liveness as last reported (``offline`` comes from the status last-will)."""

    ONLINE = "online"
    OFFLINE = "offline"


class Agent(Base):
    """An edge agent of a site, as last reported on its retained status topic."""

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    state: Mapped[str] = mapped_column(String(32), default=AgentState.ONLINE.value)
    software_version: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)

    site: Mapped[Site] = relationship()
