"""Request and answer shapes of the older tools' endpoints, field by field as their documentation gives them.

The temple classifier server (``/api/save_data``, ``/api/make_model``, ``/api/predict``) and the dataset tool's
``GET /cv?PATH_OR_URL[:HOW_MANY]``. Extra answer fields (``job_id``, ``test_accuracy``, …) are additions an old
client ignores; every documented field is present with its documented type.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

NO_CATEGORY = "No category (Anomaly)"
# The category the temple server's documentation advises filling with random images, which "also functions as an
# anomaly flag", and its answer for such images: save_data creates either group marked none of the above.
NONE_OF_THE_CATEGORIES = "None of the categories"
NONE_CATEGORIES = frozenset(text.casefold() for text in (NONE_OF_THE_CATEGORIES, NO_CATEGORY))

# The old client's extra keys must not break it; its ids may come as JSON numbers (the temple server str()-ed them).
OLD_CLIENT = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class CompatSettings(BaseModel):
    """``[compat]``: how the older tools' ids map onto sites, classifiers and groups of this hub."""

    model_config = ConfigDict(extra="forbid")

    classifier: str = Field(
        default="temple", description="classifier of the site named by temple_id that the temple endpoints use"
    )
    classifiers: dict[str, str] = Field(
        default_factory=dict, description="per temple_id: another classifier than `classifier`"
    )
    create_sites: bool = Field(
        default=True, description="save_data creates an unknown temple_id site / classifier (hub admins only)"
    )
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0, description="predict: below it, 'No category'")
    make_model_mode: Literal["quick", "full"] = "quick"
    make_model_wait_s: float = Field(default=900.0, ge=0.0, description="make_model waits this long for training")
    cv_site: str = Field(default="", description="GET /cv: site of the classifier (or ?site=)")
    cv_classifier: str = Field(default="", description="GET /cv: the classifier (or ?classifier=)")
    cv_roots: list[str] = Field(default_factory=list, description="GET /cv: folders a local path may lie in")


class SaveDataRequest(BaseModel):
    """``POST /api/save_data``: one base64 image into the site's training set or held-out test set."""

    model_config = OLD_CLIENT

    temple_id: str = Field(examples=["temple-7"])
    train_test: Literal["train", "test"] = Field(examples=["train"])
    category: str = Field(examples=["door_open"])
    image: str = Field(description="the image file, base64", examples=["/9j/4AAQSkZJRgABAQ..."])
    image_type: str = Field(default="jpg", examples=["jpg"])
    image_name: str = Field(default="", examples=["cam1_0001"])
    classifier: str | None = Field(default=None, description="a classifier other than compat.classifier")

    @field_validator("train_test", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value  # "Train", "TEST" as the original took

    @field_validator("image_type")
    @classmethod
    def _no_dot(cls, value: str) -> str:
        return value.strip().lstrip(".") or "jpg"  # ".jpg" as the original took


class SaveDataAnswer(BaseModel):
    """Only ``error_msg``, as documented ("the json contains only one key")."""

    error_msg: str = Field(description="'All OK' when saved, else what was wrong")


class MakeModelRequest(BaseModel):
    model_config = OLD_CLIENT

    temple_id: str = Field(examples=["temple-7"])
    forceful: bool = Field(default=False, description="replace the site's trained model when one exists")
    classifier: str | None = Field(default=None, description="a classifier other than compat.classifier")


class MakeModelAnswer(BaseModel):
    error_msg: list[str] = Field(default_factory=list)
    got_training_data_flag: bool = False
    got_testing_data_flag: bool = False
    made_model_architecture_flag: bool = False
    trained_model_flag: bool = False
    tested_model_flag: bool = False
    saved_model_flag: bool = False
    job_id: int | None = None
    model_version: int | None = None
    test_accuracy: float | None = Field(default=None, description="share of the test images classified right")
    test_images: int = 0


class PredictRequest(BaseModel):
    model_config = OLD_CLIENT

    temple_id: str = Field(examples=["temple-7"])
    image: str | list[str] = Field(description="one base64 image or a list of them")
    image_name: str | list[str] = Field(default="", description="the name(s), kept in the prediction log")
    image_type: str | list[str] = Field(default="jpg", description="not used (as in the original)")
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    classifier: str | None = Field(default=None, description="a classifier other than compat.classifier")


class PredictAnswer(BaseModel):
    """Lists when the request sent a list of images, single values when it sent one."""

    error_msg: list[str] = Field(default_factory=list)
    image_class: str | list[str] = ""
    class_confidence: float | list[float] = 0.0
    model_version: int | None = None


class CvAnswer(RootModel[dict[str, float]]):
    """``GET /cv``: ``{group: probability}`` of the top groups, most likely first (JSON objects keep the order)."""
