"""Typed agent configuration: one TOML file, env overrides `CAMFLEET_AGENT__SECTION__KEY=value`.

Example ``agent.toml``::

    agent = "gate-1"
    site = "shop"
    hub_url = "http://127.0.0.1:8600"
    api_token = "cf_..."          # a viewer token of this site (camfleet-hub token create --site shop --role viewer)
    data_dir = "var/agent"

    [mqtt]
    host = "127.0.0.1"
    port = 11883

    [models]
    fleet_key_sha256 = "..."      # pin the hub's fleet key by fingerprint (or set fleet_public_key itself)

    [[cameras]]
    name = "door"
    source = "rtsp://10.0.0.5/stream1"   # or a video file, an image folder, a USB index like "0"
    fps = 2                              # frame-rate cap
    upload_interval_s = 10
    [cameras.gate]                       # motion gate: classify only frames with change (see
    sensitivity = 0.5                    # camfleet_contract.agent_config for every key)
    [[cameras.classifiers]]              # none listed: every active classifier on the whole frame
    classifier = "door"
    region = { rect = [0.1, 0.2, 0.5, 0.9] }
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from camfleet_contract.agent_config import MAX_AGENT_CAMERAS, CameraConfig
from camfleet_contract.config import load_config
from camfleet_contract.mqtt import MqttSettings as BrokerSettings
from camfleet_contract.topics import validate_name  # a TopicError is a ValueError: pydantic reports it

from .swap_watch import SwapWatchSettings

ENV_PREFIX = "CAMFLEET_AGENT"
DEFAULT_HUB_URL = "http://127.0.0.1:8600"
DEFAULT_MQTT_PORT = 11883  # the hub's embedded broker
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")


class MqttSettings(BrokerSettings):
    """How to reach the broker: the contract's settings (secret password, TLS files, validated root), the hub's
    embedded broker's port by default, and this agent's client id."""

    port: int = Field(default=DEFAULT_MQTT_PORT, ge=1, le=65535)
    client_id: str | None = Field(default=None, description="default: camfleet-agent-{site}-{agent}")


class CameraSettings(CameraConfig):
    """One camera: the hub-describable part (source, fps cap, classifiers, gate, uploads) plus local settings."""

    upload_interval_s: float = Field(default=10.0, ge=0, description="publish a frame every N seconds; 0 = never")
    loop: bool = Field(default=True, description="replay video files and image folders forever")
    jpeg_quality: int = Field(default=85, ge=1, le=100)


class ModelTrustSettings(BaseModel):
    """How the agent comes to trust the fleet key that model bundles are signed with (besides fleet_public_key)."""

    model_config = ConfigDict(extra="forbid")

    fleet_key_sha256: str = Field(default="", description="sha256 of the fleet public key: the hub's key is pinned")
    trust_on_first_use_http: bool = Field(
        default=False,
        description="pin whatever key the hub first offers over plain http:// (anyone on the path could choose it)",
    )

    @field_validator("fleet_key_sha256")
    @classmethod
    def _fingerprint(cls, v: str) -> str:
        v = v.strip()
        if v and not _HEX_KEY.fullmatch(v):
            raise ValueError(f"models.fleet_key_sha256={v!r} must be 64 hex characters (a sha256) or empty")
        return v.lower()


class DeliverySettings(BaseModel):
    """How events and frames reach the broker: the durable outbox on disk (``data_dir/outbox.sqlite``)."""

    model_config = ConfigDict(extra="forbid")

    outbox_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=64 * 1024,
        description="bound of the on-disk queue; when full: sampled frames go first, then other frames, events last",
    )
    clock_skew_warn_s: float = Field(
        default=120.0, gt=0, description="report a problem when a hub command's time differs from ours by more"
    )


class HealthSettings(BaseModel):
    """The local HTTP endpoints /healthz, /readyz and Prometheus /metrics."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=9108, ge=0, le=65535, description="0 = any free port (tests)")


class AgentSettings(BaseModel):
    """Everything an agent process needs; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(description="this agent's name, unique within the site")
    site: str
    hub_url: str = DEFAULT_HUB_URL
    api_token: SecretStr | None = Field(
        default=None,
        description="bearer token for the hub (a viewer token of this site): model bundles and the fleet key",
    )
    data_dir: Path = Field(default=Path("var/agent"), description="models and state")
    fleet_public_key: str = Field(default="", description="hex ed25519 key; empty = fetch from the hub and pin")
    top_k: int = Field(default=5, ge=1, le=100)
    use_int8: bool = Field(
        default=True,
        description="run a bundle's INT8 model when its trainer measured it within 1 accuracy point of FP32",
    )
    queue_size: int = Field(default=4, ge=1, le=1000, description="frames buffered per camera before dropping")
    inference_workers: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="threads classifying frames, shared by every camera; with more than one, frames of one camera "
        "run side by side and are published in order (default 2 where there are 2 cores or more, else 1)",
    )
    model_threads: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="ONNX Runtime threads per model run (default: the cores, up to 4, shared out among the "
        "inference workers)",
    )
    status_interval_s: float = Field(default=30.0, gt=0)

    swap_watch: SwapWatchSettings = Field(default_factory=SwapWatchSettings)  # a new model's first frames
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    models: ModelTrustSettings = Field(default_factory=ModelTrustSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    cameras: list[CameraSettings] = Field(default_factory=list, max_length=MAX_AGENT_CAMERAS)

    @field_validator("agent")
    @classmethod
    def _agent(cls, v: str) -> str:
        return validate_name(v, "agent")

    @field_validator("site")
    @classmethod
    def _site(cls, v: str) -> str:
        return validate_name(v, "site")

    @field_validator("hub_url")
    @classmethod
    def _hub_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"hub_url={v!r} must be an http:// or https:// URL")
        return v.rstrip("/")

    @field_validator("fleet_public_key")
    @classmethod
    def _key(cls, v: str) -> str:
        v = v.strip()
        if v and not _HEX_KEY.fullmatch(v):
            raise ValueError(f"fleet_public_key={v!r} must be 64 hex characters (an ed25519 public key) or empty")
        return v.lower()

    @model_validator(mode="after")
    def _unique_cameras(self) -> AgentSettings:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.name in seen:
                raise ValueError(f"cameras: name {cam.name!r} is used twice")
            seen.add(cam.name)
        return self

    def inference_threads(self) -> tuple[int, int]:
        """(inference workers, ONNX Runtime threads per run). Two workers with the cores shared out overlap one
        frame's Python work with another's model run (0.75 of raw ORT against 0.70 for one worker on 2 cores)."""
        cores = min(4, os.cpu_count() or 1)
        workers = self.inference_workers or min(2, cores)
        return workers, self.model_threads or max(1, cores // workers)


def load_settings(path: Path | None) -> AgentSettings:
    """Read the TOML file + env overrides; raises camfleet_contract.config.ConfigError naming the field."""
    return load_config(AgentSettings, path, ENV_PREFIX)
