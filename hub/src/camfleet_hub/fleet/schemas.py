"""REST bodies of the fleet domain: Create / Update / Public per resource."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from camfleet_contract.agent_config import MAX_AGENT_CAMERAS, CameraConfig
from camfleet_contract.messages import Prediction
from camfleet_contract.topics import Name


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --------------------------------------------------------------------------- events


class EventPublic(Public):
    id: int
    event_id: str
    site: str
    camera: str
    agent: str
    classifier: str
    model_version: str
    frame_id: str
    ts: datetime
    label: str
    probability: float
    anomaly: bool
    anomaly_score: float
    motion: float | None
    latency_ms: float
    predictions: list[Prediction]


class EventPagePublic(Public):
    items: list[EventPublic]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page; null on the last page")


class HourCountPublic(Public):
    hour: datetime
    classifier: str
    label: str
    count: int
    anomalies: int


class FleetSiteSettingsPublic(Public):
    site: str
    event_retention_days: int
    homeassistant: bool


class FleetSiteSettingsUpdate(Request):
    event_retention_days: int | None = Field(default=None, ge=1, le=3650)
    homeassistant: bool | None = None


# --------------------------------------------------------------------------- agent settings


class AgentConfigUpdate(Request):
    """A new version of an agent's settings: the whole camera list (the hub numbers the version)."""

    cameras: list[CameraConfig] = Field(max_length=MAX_AGENT_CAMERAS)

    @model_validator(mode="after")
    def _unique_cameras(self) -> AgentConfigUpdate:
        names = [c.name for c in self.cameras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"cameras: name {dupes[0]!r} is used twice")
        return self


class AgentConfigPublic(Public):
    site: str
    agent: str
    version: int
    cameras: list[CameraConfig]
    created_by: str
    created_at: datetime
    applied_version: int | None = Field(description="the settings version the agent last reported applying")


# --------------------------------------------------------------------------- commands


class CommandCreate(Request):
    command: Literal["snapshot", "reload", "restart", "config"]
    camera: Name | None = None


class CommandPublic(Public):
    command_id: str
    site: str
    agent: str
    command: str
    camera: str | None
    sent_by: str
    sent_at: datetime
    result: str | None = Field(description="ok | error from the agent's reply; null while none came")
    message: str | None
    replied_at: datetime | None


# --------------------------------------------------------------------------- rollout


class RolloutStage(Request):
    """Stage ``version`` on named agents and/or a share of the site's agents; again with more agents or a higher
    percent to widen (percent=100 promotes to all)."""

    version: int = Field(ge=1)
    agents: list[Name] = Field(default_factory=list, max_length=1000)
    percent: int = Field(default=0, ge=0, le=100)


class RolloutPromote(Request):
    version: int | None = Field(default=None, ge=1, description="default: the staged version")


class PinCreate(Request):
    version: int = Field(ge=1)


class FirstFramesPublic(Public):
    version: str
    since: datetime
    frames: int
    anomaly_rate: float
    mean_confidence: float
    complete: bool


class AnomalyJumpPublic(Public):
    agent: str
    version: str
    previous: str
    anomaly_rate: float
    previous_rate: float
    frames: int
    text: str


class AgentRolloutPublic(Public):
    agent: str
    state: str
    expected_version: int | None
    applied_version: str | None = Field(description="what the agent reports running (its status)")
    pinned: bool
    staged: bool
    problems: list[str] = Field(description="the agent's reported problems that name this classifier")
    first_frames: FirstFramesPublic | None = Field(
        default=None, description="the agent's latest version of this classifier over its first frames after the swap"
    )
    previous_frames: FirstFramesPublic | None = Field(default=None, description="the version it ran before")


class RolloutPublic(Public):
    site: str
    classifier: str
    production_version: int | None
    staged_version: int | None
    staged_agents: list[str]
    percent: int
    pins: dict[str, int]
    agents: list[AgentRolloutPublic]
    anomaly_jumps: list[AnomalyJumpPublic] = Field(
        description="agents on which the latest version's anomaly rate jumped against the version before"
    )
    flagged_versions: list[str] = Field(description="versions with an anomaly jump on at least one agent")
