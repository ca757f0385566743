"""The hub's REST API as the agent and the trainer use it: paths and request/response bodies.

The hub's routes declare these models (its `schemas` re-exports them) and `camfleet_contract.client` returns
them, so the three packages agree on one definition; tests/contract/test_rest_openapi.py checks the hub's
OpenAPI against `ENDPOINTS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from camfleet_contract.bundle import Precision

API_PREFIX = "/api/v1"
MAX_EPOCHS_PER_BEAT = 1000
BACKBONE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
# What a training job does: train a quick or full bundle, or compare backbones on the classifier's images.
JobMode = Literal["quick", "full", "compare"]
COMPARE_MODE: JobMode = "compare"


class Request(BaseModel):
    """Base of request bodies: unknown fields are a client mistake, not something to ignore."""

    model_config = ConfigDict(extra="forbid")


class Public(BaseModel):
    """Base of response bodies; unknown fields from a newer hub are ignored."""

    model_config = ConfigDict(from_attributes=True)


# --------------------------------------------------------------------------- models


class ModelPublic(Public):
    id: int
    site: str | None = Field(default=None, description="None for the ImageNet default")
    classifier: str | None = Field(default=None, description="None for the ImageNet default")
    default: bool = False
    version: int
    status: str
    sha256: str
    size: int
    classes: list[str] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    job_id: int | None = None
    created_at: datetime
    promoted_at: datetime | None = None
    bundle_url: str


class FleetKey(Public):
    public_key: str


# --------------------------------------------------------------------------- jobs


class JobParams(Request):
    """Training knobs; every one optional (the trainer's defaults apply), ``gpu`` asks for a GPU worker."""

    epochs: int | None = Field(default=None, ge=1, le=1000, description="full mode: maximum epochs")
    test_size: float | None = Field(default=None, gt=0.0, lt=1.0, description="validation fraction (0.2)")
    batch_size: int | None = Field(default=None, ge=1, le=4096)
    backbone: str | None = Field(
        default=None, pattern=BACKBONE_PATTERN, description="timm model name, e.g. tf_efficientnet_lite0"
    )
    image_size: int | None = Field(default=None, ge=32, le=1024, description="full mode: input size (backbone's own)")
    int8: bool | None = Field(
        default=None, description="add the INT8 variant when it loses under 1 point (default: full mode only)"
    )
    gpu: bool = Field(default=False, description="only a trainer with a GPU may claim the job")


class JobPublic(Public):
    id: int
    site: str
    classifier: str
    mode: str
    status: str
    worker: str | None = None
    attempts: int
    max_attempts: int
    lease_expires_at: datetime | None = None
    progress: float
    stage: str | None = None
    message: str | None = None
    auto_promote: bool
    params: dict[str, Any] = Field(default_factory=dict, description="the knobs given at creation")
    gpu: bool = False
    model_version_id: int | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class WorkerRequest(Request):
    worker: str = Field(min_length=1, max_length=128)


class JobClaim(WorkerRequest):
    gpu: bool = False


class JobClaimed(Public):
    job: JobPublic
    lease_seconds: float


class EpochMetrics(Request):
    """One finished epoch of a full fine-tune, as the trainer measured it."""

    epoch: int = Field(ge=0, le=100_000)
    loss: float | None = Field(default=None, allow_inf_nan=False)
    train_acc: float | None = Field(default=None, ge=0.0, le=1.0)
    val_acc: float | None = Field(default=None, ge=0.0, le=1.0)
    val_loss: float | None = Field(default=None, allow_inf_nan=False)
    epoch_s: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    eta_s: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)


class JobHeartbeat(WorkerRequest):
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    stage: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=2000)
    metrics: EpochMetrics | list[EpochMetrics] | None = Field(
        default=None, description="the latest epoch's figures (or the epochs finished since the last heartbeat)"
    )

    @field_validator("metrics")
    @classmethod
    def _max_epochs(cls, v: EpochMetrics | list[EpochMetrics] | None) -> EpochMetrics | list[EpochMetrics] | None:
        if isinstance(v, list) and len(v) > MAX_EPOCHS_PER_BEAT:
            raise ValueError(f"at most {MAX_EPOCHS_PER_BEAT} epochs per heartbeat (got {len(v)})")
        return v

    def epochs(self) -> list[dict[str, int | float]]:
        """The epoch figures as plain dicts (unset fields left out), as the hub stores them."""
        items = [] if self.metrics is None else self.metrics if isinstance(self.metrics, list) else [self.metrics]
        return [m.model_dump(exclude_none=True) for m in items]


class HeartbeatAnswer(Public):
    cancel: bool
    lease_seconds: float


class JobFail(WorkerRequest):
    reason: str = Field(min_length=1, max_length=2000)


class ComparisonRow(Public):
    """One backbone (or stack) at one precision: held-out accuracy, batch-1 speed and file size of its ONNX model."""

    backbone: str
    precision: Precision
    accuracy: float
    images_per_s: float
    size_mb: float
    input_size: int
    embedding_dim: int


class SkippedBackbone(Public):
    backbone: str
    reason: str


class ModelComparison(Public):
    """`camfleet-trainer compare` on a classifier's images: what a site weighs when it picks a backbone."""

    data: str = Field(default="", description="where the images came from")
    classes: list[str]
    train_images: int
    eval_images: int
    eval_set: str = Field(description='"held-out 20 % of the data (stratified)" or the evaluation folder')
    threads: int = Field(description="ONNX Runtime threads in the speed measurement")
    rows: list[ComparisonRow] = Field(default_factory=list)
    skipped: list[SkippedBackbone] = Field(default_factory=list)


class JobComparison(WorkerRequest):
    """A compare job's result, sent by the worker that holds its lease."""

    comparison: ModelComparison


class DatasetImage(Public):
    id: int
    sha256: str
    group: str
    cluster: int | None = Field(
        default=None, description="near-duplicate cluster (smallest image id in it): keep a cluster on one split side"
    )


class Dataset(Public):
    job_id: int
    site: str
    classifier: str
    classes: list[str]
    none_classes: list[str] = Field(
        default_factory=list,
        description='groups of `classes` marked "none of the above": trained on, and a prediction of one flags the '
        "image as fitting no known group",
    )
    images: list[DatasetImage]


# --------------------------------------------------------------------------- paths

Method = Literal["GET", "POST", "PUT"]


@dataclass(frozen=True)
class Endpoint:
    """One route: method, path under API_PREFIX (with `{name}` parameters), and its JSON bodies (None: not JSON)."""

    method: Method
    template: str
    response: type[BaseModel] | None
    request: type[BaseModel] | None = None
    status: int = 200

    def path(self, **params: str | int) -> str:
        """The path under API_PREFIX with its parameters filled in."""
        return self.template.format(**params)

    def url_path(self, **params: str | int) -> str:
        """The absolute path (API_PREFIX included), e.g. what the hub announces."""
        return API_PREFIX + self.path(**params)


GET_DEFAULT_MODEL = Endpoint("GET", "/models/default", ModelPublic)
PUT_DEFAULT_MODEL = Endpoint("PUT", "/models/default", ModelPublic)  # multipart `file`: the bundle zip
MODEL_BUNDLE = Endpoint("GET", "/models/{model_id}/bundle", None)  # application/zip
FLEET_KEY = Endpoint("GET", "/keys/fleet", FleetKey)
BLOB = Endpoint("GET", "/blobs/{sha256}", None)  # the image bytes
CLAIM_JOB = Endpoint("POST", "/jobs/claim", JobClaimed, JobClaim)  # 204: nothing waiting
HEARTBEAT_JOB = Endpoint("POST", "/jobs/{job_id}/heartbeat", HeartbeatAnswer, JobHeartbeat)
FAIL_JOB = Endpoint("POST", "/jobs/{job_id}/fail", JobPublic, JobFail)
JOB_DATASET = Endpoint("GET", "/jobs/{job_id}/dataset", Dataset)
JOB_EMBEDDINGS = Endpoint("GET", "/jobs/{job_id}/embeddings", None)  # camfleet_contract.vectors .npz
JOB_RESULT = Endpoint("POST", "/jobs/{job_id}/result", ModelPublic, status=201)  # multipart `file`; 200: repeated
JOB_COMPARISON = Endpoint("POST", "/jobs/{job_id}/comparison", JobPublic, JobComparison)

ENDPOINTS: tuple[Endpoint, ...] = (
    GET_DEFAULT_MODEL,
    PUT_DEFAULT_MODEL,
    MODEL_BUNDLE,
    FLEET_KEY,
    BLOB,
    CLAIM_JOB,
    HEARTBEAT_JOB,
    FAIL_JOB,
    JOB_DATASET,
    JOB_EMBEDDINGS,
    JOB_RESULT,
    JOB_COMPARISON,
)
