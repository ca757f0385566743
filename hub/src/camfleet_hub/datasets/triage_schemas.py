"""Bodies of the triage API: NEW images with their camera, upload rule and the model's suggestion; accepting it.

Kept apart from ``schemas.py`` and ``schemas_curation.py`` so that parallel work there does not touch this file.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from camfleet_contract.envelope import UploadRuleName
from camfleet_hub.core.schemas import Public, Request
from camfleet_hub.datasets.models import ImageStatus
from camfleet_hub.datasets.schemas import ImagePublic


class Suggestion(Public):
    label: str = Field(description="the label the model predicted for the frame")
    probability: float = Field(ge=0.0, le=1.0)
    group: str | None = Field(default=None, description="the classifier's group of that name; None when it has none")


class TriageImage(ImagePublic):
    """An image as Triage shows it; the camera fields are None for images that did not come from a camera."""

    camera: str | None = None
    agent: str | None = None
    captured_at: datetime | None = None
    rule: UploadRuleName | None = Field(default=None, description="the agent's upload rule that sent the frame")
    rule_text: str | None = Field(default=None, description="the rule in plain words, e.g. 'low confidence'")
    suggestion: Suggestion | None = None


class AcceptSuggestions(Request):
    ids: list[int] = Field(min_length=1, max_length=5000, description="image ids, all of this classifier")
    expected_status: ImageStatus | None = Field(
        default=ImageStatus.NEW, description="the status the client saw for every image; 409 when one changed"
    )
