"""JSON messages of wire protocol v1 (events, agent status, model announcements, commands)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from .agent_config import MAX_AGENT_CAMERAS, AgentConfig
from .rollback import RollbackStatement
from .topics import Name

M = TypeVar("M", bound=BaseModel)

MAX_MESSAGE_BYTES = 256 * 1024
# The most characters of settings text a `SignedConfig` carries: half a message, as JSON escaping of the text's quotes
# may double it. The hub refuses settings over it (or a message over MAX_MESSAGE_BYTES) before storing them.
MAX_SIGNED_CONFIG_CHARS = MAX_MESSAGE_BYTES // 2


class MessageError(ValueError):
    """A message payload is not valid JSON of the expected schema."""


def utcnow() -> datetime:
    """Timezone-aware now in UTC: the only kind of timestamp the hub, the agent and the trainer write."""
    return datetime.now(UTC)


def _in_utc_range(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is outside the range of UTC timestamps (years 1-9999)") from None
    return value


Timestamp = Annotated[AwareDatetime, AfterValidator(_in_utc_range)]
"""An aware timestamp that can be stored: ``9999-12-31T23:00-05:00`` is valid ISO 8601 but past year 9999 in UTC."""


def _nul_in(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_nul_in(k) or _nul_in(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_nul_in(v) for v in value)
    return False  # nested messages check themselves


class Message(BaseModel):
    """A wire message: no unknown fields, finite numbers only (JSON has no NaN), no NUL characters (PostgreSQL
    text cannot hold them), timestamps (``Timestamp``) that convert to UTC. What an agent publishes is stored by
    the hub, so anything the database or a JSON answer cannot hold is refused here, as the message's own fault."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _no_nul(self) -> Message:
        for name in type(self).model_fields:
            if _nul_in(getattr(self, name)):
                raise ValueError(f"{name}: text must not contain NUL characters")
        return self


Unit = Annotated[float, Field(ge=0.0, le=1.0)]
NormBox = tuple[Unit, Unit, Unit, Unit]
"""A box [x0, y0, x1, y1] in normalised frame coordinates ((0, 0) top-left, (1, 1) bottom-right)."""


class Prediction(Message):
    label: str = Field(min_length=1, max_length=200)
    probability: float = Field(ge=0.0, le=1.0)


class Event(Message):
    """One classification of one frame by one classifier, published for anyone to consume."""

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    frame_id: str
    ts: Timestamp = Field(default_factory=utcnow)
    site: Name
    camera: Name
    agent: Name
    classifier: Name
    model_version: str
    label: str
    probability: float = Field(ge=0.0, le=1.0)
    predictions: list[Prediction]
    anomaly: bool
    anomaly_score: float = Field(ge=0.0, le=1.0)
    motion: float | None = None  # share of the camera's (unmasked) frame that changed; None: no motion gate
    motion_regions: list[NormBox] = Field(default_factory=list, max_length=16)  # changed regions, largest first
    latency_ms: float = Field(ge=0.0)


class FirstFrames(Message):
    """A model version's behaviour over its first frames on one agent: the first ``frames`` classified after it
    became active (all cameras of the agent together), counted until N frames or M minutes (then ``complete``)."""

    version: str = Field(min_length=1, max_length=64)
    since: Timestamp = Field(description="when the agent first classified with this version")
    frames: int = Field(ge=0)
    anomaly_rate: Unit = Field(description="share of those frames flagged anomalous")
    mean_confidence: Unit = Field(description="mean top-1 probability over those frames")
    complete: bool = Field(description="N frames or M minutes reached: the figures no longer change")


class SwapBehaviour(Message):
    """Per classifier: the running version's first-frames figures and the previous version's last-known ones."""

    current: FirstFrames
    previous: FirstFrames | None = None


class AgentStatus(Message):
    """Retained per agent; the last-will variant has state 'offline' and little else."""

    state: Literal["online", "offline"]
    agent: Name
    site: Name
    ts: Timestamp = Field(default_factory=utcnow)
    software_version: str = ""
    models: dict[str, str] = Field(default_factory=dict)
    cameras: list[Name] = Field(default_factory=list, max_length=MAX_AGENT_CAMERAS)
    fps: dict[str, float] = Field(default_factory=dict)
    gate_ratio: dict[str, float] = Field(
        default_factory=dict, description="per camera: frames classified ÷ frames captured (the motion gate's share)"
    )
    outbox_depth: int = Field(default=0, ge=0, description="events and frames queued on disk, not yet acknowledged")
    outbox_bytes: int = Field(default=0, ge=0)
    dropped: dict[str, int] = Field(
        default_factory=dict, description="messages and frames dropped since start, by reason (outbox_full_sampled)"
    )
    reconnects: int = Field(default=0, ge=0, description="MQTT reconnections since start")
    config_version: int | None = Field(default=None, description="version of the hub-signed settings applied")
    problems: list[str] = Field(
        default_factory=list, description="what is wrong now (camera unreachable, unknown classifier, clock skew)"
    )
    first_frames: dict[Name, SwapBehaviour] = Field(
        default_factory=dict, description="classifier → behaviour of its model after the last swap (and before it)"
    )


class AgentModel(Message):
    """A per-agent entry of a rollout plan: the bundle this one agent runs instead of the site's default."""

    version: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0)
    url: str = Field(min_length=1, max_length=1000)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")
    classes: list[str]
    rollback: RollbackStatement | None = None


class ModelAnnouncement(Message):
    """Retained on models/{classifier}: the bundle every agent of the site should run.

    ``agents`` is the rollout plan's per-agent part (staged agents, pins): an agent named there runs that entry
    instead of the default; ``for_agent`` picks. The bundles stay signed by the hub, so an entry can name only a
    bundle the hub signed for this site and classifier, as the default can.
    """

    classifier: Name
    version: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0)
    url: str = Field(min_length=1, max_length=1000)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")
    classes: list[str]
    created_at: Timestamp = Field(default_factory=utcnow)
    rollback: RollbackStatement | None = Field(default=None, description="hub-signed; only for a lower version")
    agents: dict[Name, AgentModel] = Field(default_factory=dict, description="per-agent overrides (rollout)")

    def for_agent(self, agent: str) -> ModelAnnouncement:
        """What ``agent`` should run: its own entry when the plan names it, else the default (no plan either way)."""
        entry = self.agents.get(agent)
        if entry is None:
            return self.model_copy(update={"agents": {}})
        return self.model_copy(update={**{f: getattr(entry, f) for f in AgentModel.model_fields}, "agents": {}})


CommandName = Literal["snapshot", "config", "reload", "restart"]


class Command(Message):
    """Hub → agent request, answered by a `CommandReply` with the same `command_id`.

    - ``snapshot``: upload the camera's current frame now (every camera when `camera` is unset);
    - ``reload``: re-apply the stored signed settings and re-check the models;
    - ``restart``: close and reopen one camera (`camera` required);
    - ``config``: report the settings version applied (the settings themselves travel on the config topic).
    """

    command_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    command: CommandName
    camera: Name | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    ts: Timestamp = Field(default_factory=utcnow)


class CommandReply(Message):
    """Agent → hub on `agents/{agent}/reply`: what became of a command (also of one that could not be read)."""

    command_id: str | None = Field(default=None, description="None when the command was unreadable")
    command: str | None = Field(default=None, max_length=64)
    agent: Name
    result: Literal["ok", "error"]
    message: str = Field(default="", max_length=2000)
    ts: Timestamp = Field(default_factory=utcnow)


class AgentConfigDocument(Message):
    """What the hub signs for one agent: the settings and whom they are for."""

    site: Name
    agent: Name
    issued_at: Timestamp = Field(default_factory=utcnow)
    config: AgentConfig


class SignedConfig(Message):
    """Hub → agent, retained on `agents/{agent}/config`: an `AgentConfig` as JSON text, signed by the fleet key.

    `config` is signed as the exact UTF-8 bytes sent, so no re-serialisation can change what was signed; it
    names the site and agent it is for, so a copy published to another agent's topic is refused.
    """

    config: str = Field(min_length=2, max_length=MAX_SIGNED_CONFIG_CHARS)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")


def to_json(msg: BaseModel) -> bytes:
    return msg.model_dump_json().encode()


def from_json(cls: type[M], payload: bytes | str) -> M:
    """Parse and validate; raises MessageError naming the fields that are wrong."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise MessageError(f"{cls.__name__}: payload of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return cls.model_validate_json(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:5])
        raise MessageError(f"{cls.__name__}: {problems}") from None
