"""REST bodies of training jobs, their progress and events, model reports and label errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from camfleet_contract.rest import (
    JobMode,
    JobParams,
    JobPublic,
)
from camfleet_hub.core.schemas import Public, Request


class MisclassifiedImage(Public):
    image_id: int | None = Field(default=None, description="None when the image is no longer in the dataset")
    sha256: str | None = None
    label: str
    predicted: str
    probability: float | None = Field(default=None, description="the model's probability of its prediction")
    thumbnail_url: str | None = None


class ModelReport(Public):
    """A model version's report, normalised: every part is empty when an older bundle did not carry it."""

    model_id: int
    version: int
    status: str
    classes: list[str]
    metrics: dict[str, Any] = Field(default_factory=dict, description="the manifest's metrics")
    per_class: dict[str, dict[str, Any]] = Field(default_factory=dict, description="precision, recall, support")
    confusion: list[list[int]] | None = Field(default=None, description="rows: true class, columns: predicted")
    confusion_url: str | None = None
    misclassified: list[MisclassifiedImage] = Field(default_factory=list)
    thresholds: dict[str, Any] = Field(default_factory=dict, description="calibrated anomaly thresholds")
    int8: dict[str, Any] | None = Field(default=None, description="INT8 accuracy and speed versus FP32")
    label_errors: int = Field(default=0, description="images ranked by the out-of-fold label check")
    report: dict[str, Any] = Field(default_factory=dict, description="the bundle's report.json (minus the ranking)")


class LabelErrorPublic(Public):
    image_id: int
    sha256: str
    given_label: str
    predicted_label: str
    self_confidence: float = Field(description="out-of-fold probability of the given label (low: doubtful)")
    predicted_confidence: float | None = None
    group: str | None = Field(default=None, description="the image's group now")
    model_version_id: int
    thumbnail_url: str
    content_url: str


class JobCreate(Request):
    mode: JobMode = Field(default="quick", description="quick or full training, or compare: a table of backbones")
    auto_promote: bool = False
    params: JobParams = Field(default_factory=JobParams)


class JobEventPublic(Public):
    id: int
    created_at: datetime
    progress: float
    stage: str | None = None
    message: str | None = None
    metrics: list[dict[str, Any]] | None = None


class JobProgress(Public):
    """A job with its heartbeat history and the per-epoch curve (one point per epoch, the latest figures)."""

    job: JobPublic
    events: list[JobEventPublic]
    epochs: list[dict[str, Any]]
    eta_s: float | None = Field(default=None, description="seconds left, from the latest heartbeat that said")
    last_event_id: int | None = None
