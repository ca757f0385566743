"""The trainer worker's settings: one TOML file plus CAMFLEET_TRAINER__KEY=value environment overrides."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from camfleet_contract.config import load_config

ENV_PREFIX = "CAMFLEET_TRAINER"
DEFAULT_BACKBONE = "tf_efficientnet_lite0"
# The quick model's features: these backbones on one input, side by side, with this view (stack.py). Chosen by
# 5-fold CV on clothing train/ weighed against the agent's images/s (docs/BENCHMARKS.md, issue 16).
DEFAULT_QUICK_BACKBONES: tuple[str, ...] = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
View = Literal["std", "full"]
VIEWS: tuple[View, ...] = ("std", "full")
DEFAULT_QUICK_VIEW: View = "full"
# How each backbone's last feature map becomes features: `mean` = one global average (timm's pooling); `bands` =
# the averages of its top, middle and bottom thirds plus the last block stage's average, each L2-normalised. Same
# forward pass; bands measured +0.75 CV points on clothing train/ for the three-backbone stack (docs/BENCHMARKS.md).
Pooling = Literal["mean", "bands"]
POOLINGS: tuple[Pooling, ...] = ("mean", "bands")
DEFAULT_QUICK_POOLING: Pooling = "bands"
# What a comparison measures unless told: each packaged backbone alone, then the stack quick mode ships.
DEFAULT_COMPARE: tuple[str, ...] = ("lite0", "lite1", "lite2", "lite0+lite1+lite2")
DEFAULT_CACHE = Path("~/.cache/camfleet-trainer")


class TrainerSettings(BaseModel):
    """Where the hub is, who this worker is, and where it keeps its cache and signing key."""

    model_config = ConfigDict(extra="forbid")

    hub_url: str = Field(default="http://127.0.0.1:8600", description="base URL of the hub (without /api/v1)")
    api_token: SecretStr | None = Field(default=None, description="bearer token for the hub (never printed)")
    worker: str = Field(default_factory=socket.gethostname, min_length=1, max_length=128)
    cache_dir: Path = Field(default=DEFAULT_CACHE, description="embeddings, downloaded images, default bundle")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(default=None, ge=1, le=512, description="torch CPU threads (default: all cores)")
    poll_interval_s: float = Field(default=2.0, gt=0.0, le=3600.0)
    request_timeout_s: float = Field(default=30.0, gt=0.0, le=3600.0)
    retries: int = Field(default=6, ge=0, le=100, description="tries after a connection error or 5xx answer")
    signing_key_path: Path | None = Field(default=None, description="default: <cache_dir>/trainer.key")
    backbone: str = Field(
        default=DEFAULT_BACKBONE, description="the default bundle's and full mode's backbone (hub import vectors)"
    )
    checkpoint: Path | None = Field(default=None, description="local weights file for a backbone without a package")
    quick_backbones: list[str] = Field(
        default_factory=lambda: list(DEFAULT_QUICK_BACKBONES),
        min_length=1,
        max_length=4,
        description="quick mode: the backbones whose features are concatenated (one input, one bundle)",
    )
    quick_view: View = Field(
        default=DEFAULT_QUICK_VIEW,
        description="quick mode: std = the backbone's centre crop; full = the whole shorter side as the square",
    )
    quick_pooling: Pooling = Field(
        default=DEFAULT_QUICK_POOLING,
        description="quick mode: mean = each backbone's global average; bands = the averages of the top, middle "
        "and bottom thirds of its last feature map and of its last block (more accurate, a larger embedding)",
    )
    target_flag_rate: float = Field(default=0.05, gt=0.0, lt=1.0)
    hub_embeddings: bool = Field(
        default=True,
        description="quick jobs train on the vectors the hub computed at import (seconds instead of minutes); "
        "false computes image + mirror features here (same CV accuracy, minutes per few thousand new images); "
        "used only when the quick recipe is the default bundle's (one backbone, its own preprocessing)",
    )

    compare_backbones: list[str] = Field(
        default_factory=lambda: list(DEFAULT_COMPARE),
        min_length=1,
        max_length=12,
        description='compare jobs: the backbones measured ("lite1", a timm name, or a stack such as "lite0+lite2")',
    )

    @field_validator("hub_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"hub_url must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    @field_validator("cache_dir", "signing_key_path", "checkpoint")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return None if v is None else v.expanduser()

    @property
    def key_path(self) -> Path:
        """The trainer's local ed25519 seed (created on first use)."""
        return self.signing_key_path or self.cache_dir / "trainer.key"


def load_settings(path: str | Path | None) -> TrainerSettings:
    """Read the TOML file (optional) with environment overrides; raises ConfigError naming the bad key."""
    return load_config(TrainerSettings, path, ENV_PREFIX)
