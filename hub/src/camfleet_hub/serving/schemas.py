"""Request and answer shapes of the serving routes (analyse)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from camfleet_contract.rest import (  # noqa: F401
    BACKBONE_PATTERN,
    MAX_EPOCHS_PER_BEAT,
    Dataset,
    DatasetImage,
    EpochMetrics,
    FleetKey,
    HeartbeatAnswer,
    JobClaim,
    JobClaimed,
    JobFail,
    JobHeartbeat,
    JobParams,
    JobPublic,
    ModelPublic,
    WorkerRequest,
)
from camfleet_contract.topics import validate_name  # a TopicError is a ValueError: pydantic reports it
from camfleet_hub.core.schemas import Public, Request

DEFAULT_NEIGHBOURS = 8
MAX_NEIGHBOURS = 50


class AnalyseRequest(BaseModel):
    """Analyse an image already in the classifier's dataset (JSON); uploads come as multipart ``file``."""

    model_config = ConfigDict(extra="forbid")

    image_id: int = Field(ge=1, lt=2**63, description="an image of this classifier")


class GroupProbability(BaseModel):
    group: str
    probability: float


class AnomalyExplained(BaseModel):
    anomaly: bool = Field(description="the score is above the model's threshold")
    score: float
    threshold: float
    target_flag_rate: float = Field(description="share of normal held-out images the threshold flags")
    explanation: str = Field(description="the score against the threshold, in plain words")


class Neighbour(BaseModel):
    image_id: int
    group: str | None = Field(description="None for an image not yet in a group")
    status: str
    distance: float = Field(description="cosine distance of the ImageNet-default embeddings (0 = identical)")
    thumbnail_url: str
    url: str


class AnalysedModel(BaseModel):
    id: int
    classifier: str
    version: int
    default: bool = Field(description="the ImageNet default answered: the classifier has no production model")


class AnalyseAnswer(BaseModel):
    model: AnalysedModel
    image_id: int | None = Field(description="the analysed dataset image, when one was named")
    label: str
    probability: float
    probabilities: list[GroupProbability] = Field(description="every group of the model, most likely first")
    anomaly: AnomalyExplained
    k: int
    neighbours: list[Neighbour] = Field(description="the k nearest non-deleted images of the dataset, nearest first")
    neighbours_note: str | None = Field(default=None, description="why there are fewer than k neighbours")


class ClassifyRequest(Request):
    site: str
    classifier: str
    images: list[str] = Field(default_factory=list, description="base64-encoded image files (JPEG, PNG, ...)")
    urls: list[str] = Field(
        default_factory=list, description="http(s) image URLs, fetched through the URL-import guard (imports.url_*)"
    )
    top_k: int | None = Field(default=None, ge=1, le=1000, description="predictions per image (default 5)")

    @field_validator("site", "classifier")
    @classmethod
    def _names(cls, v: str, info: Any) -> str:
        return validate_name(v, info.field_name)


class PredictionPublic(Public):
    label: str
    probability: float


class ClassifyResult(Public):
    label: str
    probability: float
    predictions: list[PredictionPublic]
    anomaly: bool
    anomaly_score: float


class ModelRef(Public):
    id: int
    classifier: str
    version: int
    default: bool
    precision: Literal["fp32", "int8"] = Field(default="fp32", description="the model file that ran")


class ClassifyAnswer(Public):
    model: ModelRef
    results: list[ClassifyResult]


class TryAnswer(Public):
    """What the Try page's script gets from ``/ui/try/classify`` (a page route, not part of the REST API)."""

    model: AnalysedModel
    top: list[PredictionPublic]
    anomaly: bool
    anomaly_score: float
    threshold: float
