"""The full mode's knobs: one validated, frozen pydantic model (unknown keys rejected)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_EPOCHS = 10
MIN_BATCH = 2  # batch norm needs two images; an OOM at this size is final


class FullOptions(BaseModel):
    """Knobs of the fine-tune; every default suits a few hundred to a few thousand images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(default=DEFAULT_EPOCHS, ge=1, le=1000, description="maximum epochs")
    batch_size: int | None = Field(default=None, ge=MIN_BATCH, le=4096, description="default: 32 CPU, 64 GPU")
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0, description="validation share of every class")
    lr: float = Field(default=3e-4, gt=0.0, le=1.0, description="backbone peak learning rate")
    head_lr_scale: float | None = Field(
        default=None, gt=0.0, le=1000.0, description="head lr / backbone lr (default: 1 after a probe, 10 from zero)"
    )
    weight_decay: float = Field(default=0.05, ge=0.0, le=1.0)
    warmup_epochs: float | None = Field(default=None, ge=0.0, description="default: 10 % of the epochs, at most 1")
    min_lr_ratio: float = Field(default=0.01, ge=0.0, le=1.0, description="where the cosine decay ends")
    label_smoothing: float = Field(default=0.1, ge=0.0, lt=1.0)
    drop_rate: float = Field(default=0.2, ge=0.0, lt=1.0, description="dropout before the head")
    freeze_bn: bool = Field(
        default=True,
        description="keep batch-norm statistics as pretrained (small batches of augmented crops skew them)",
    )
    head_init: Literal["probe", "zero"] = Field(
        default="probe", description="probe: start from a linear probe on the frozen features (LP-FT)"
    )
    patience: int = Field(default=3, ge=1, le=1000, description="epochs without validation gain before stopping")
    augment: Literal["auto", "light", "medium", "strong"] = "auto"
    balance: Literal["auto", "on", "off"] = "auto"
    image_size: int | None = Field(default=None, ge=32, le=1024, description="default: the backbone's own")
    workers: int | None = Field(default=None, ge=0, le=64, description="decoding processes (default: cores - 1)")
    estimate_steps: int = Field(default=2, ge=1, le=100, description="timed steps behind the time estimate")
    max_batches: int | None = Field(default=None, ge=1, description="cap on batches per epoch (experiments)")
    neighbours: int = Field(default=5, ge=1, le=100)
    target_flag_rate: float = Field(default=0.05, gt=0.0, lt=1.0)
    seed: int = 0
