"""What an agent runs per camera: classifiers with regions, the motion gate, upload rules.

The agent reads these from its local TOML today; the hub will deliver the same structure (`AgentConfig`,
hub-signed) later, so both sides validate with these models. Coordinates are normalised to the frame:
(0, 0) is the top-left corner, (1, 1) the bottom-right one, whatever the camera's resolution.

Example (TOML, one camera)::

    [[cameras]]
    name = "gate"
    source = "rtsp://10.0.0.5/stream1"
    [cameras.gate]
    sensitivity = 0.6
    min_area = 0.002
    keepalive_s = 60
    mask = [[[0.0, 0.0], [1.0, 0.0], [1.0, 0.1], [0.0, 0.1]]]   # ignore the timestamp strip
    [[cameras.classifiers]]
    classifier = "door"
    region = { rect = [0.1, 0.2, 0.5, 0.9] }
    [[cameras.classifiers]]
    classifier = "lights"                                      # no region: the whole frame
    [[cameras.uploads]]
    rule = "low_confidence"
    below = 0.6
    hourly_cap = 20
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .topics import Name

# The most cameras one agent runs: its settings and its status name at most these, and the hub lets one agent own no
# more (a stolen agent login cannot fill a site with cameras, each one two deny lines per other agent in
# Mosquitto's acl_file).
MAX_AGENT_CAMERAS = 256
# One camera's parts, bounded on their own so a refusal names the field, not only the signed message's size: a
# source is a path or URL (browsers' own URL limit is larger, but no camera's is), and a camera runs a handful of
# classifiers and upload rules.
MAX_SOURCE_CHARS = 2048
MAX_CAMERA_CLASSIFIERS = 32
MAX_UPLOAD_RULES = 16

Coord = Annotated[float, Field(ge=0.0, le=1.0)]
Point = tuple[Coord, Coord]
Polygon = Annotated[list[Point], Field(min_length=3, max_length=64)]
"""A normalised polygon: 3 to 64 (x, y) points in [0, 1]."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Region(_Model):
    """A region of interest: exactly one of `rect` ([x0, y0, x1, y1]) or `polygon`, normalised."""

    rect: tuple[Coord, Coord, Coord, Coord] | None = None
    polygon: Polygon | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> Region:
        if (self.rect is None) == (self.polygon is None):
            raise ValueError("region: give exactly one of rect = [x0, y0, x1, y1] or polygon = [[x, y], ...]")
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            if x1 <= x0 or y1 <= y0:
                raise ValueError(f"region.rect={list(self.rect)!r}: needs x0 < x1 and y0 < y1")
        else:
            xs = [p[0] for p in self.polygon or []]
            ys = [p[1] for p in self.polygon or []]
            if max(xs) <= min(xs) or max(ys) <= min(ys):
                raise ValueError(f"region.polygon={self.polygon!r}: has no area")
        return self

    def points(self) -> list[tuple[float, float]]:
        """The outline as a polygon (a rect becomes its four corners)."""
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        return [(float(x), float(y)) for x, y in self.polygon or []]

    def bounds(self) -> tuple[float, float, float, float]:
        """Bounding box [x0, y0, x1, y1] of the region."""
        pts = self.points()
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return min(xs), min(ys), max(xs), max(ys)


class ClassifierBinding(_Model):
    """One classifier on one camera, on the whole frame or on a region of it (cropped before preprocessing)."""

    classifier: Name
    region: Region | None = None


class GateSettings(_Model):
    """The motion / change gate: only frames with change are classified, still scenes every `keepalive_s`."""

    enabled: bool = True
    method: Literal["mog2", "diff"] = Field(
        default="mog2", description="mog2: OpenCV background subtraction; diff: difference to the previous frame"
    )
    sensitivity: float = Field(
        default=0.5, ge=0.0, le=1.0, description="0 = only large, strong changes count; 1 = the faintest ones do"
    )
    min_area: float = Field(
        default=0.002, ge=0.0, le=1.0, description="smallest changed region that counts, as a share of the frame"
    )
    keepalive_s: float = Field(default=60.0, ge=0.0, description="classify a still scene this often; 0 = never")
    width: int = Field(default=160, ge=32, le=1280, description="width of the grey copy the gate works on, pixels")
    mask: list[Polygon] = Field(default_factory=list, max_length=32, description="regions to ignore (polygons)")


UploadRuleKind = Literal["sample", "low_confidence", "anomalous", "class_change"]


class UploadRule(_Model):
    """When a frame is uploaded to the hub to feed the dataset; each rule has its own hourly and daily caps.

    - ``sample``: 1 in `every_n` classified frames, or one every `every_s` seconds;
    - ``low_confidence``: top-1 probability of `classifier` (any when unset) under `below`;
    - ``anomalous``: the classifier flagged the frame as fitting no known group;
    - ``class_change``: the top-1 label differs from the previous frame's.
    """

    rule: UploadRuleKind
    classifier: Name | None = Field(default=None, description="only this classifier's results; None = any")
    every_n: int | None = Field(default=None, ge=1)
    every_s: float | None = Field(default=None, gt=0)
    below: float | None = Field(default=None, gt=0.0, le=1.0)
    hourly_cap: int | None = Field(default=None, ge=0, description="at most this many uploads per hour")
    daily_cap: int | None = Field(default=None, ge=0, description="at most this many uploads per day")

    @model_validator(mode="after")
    def _fields_for_rule(self) -> UploadRule:
        if self.rule == "sample" and (self.every_n is None) == (self.every_s is None):
            raise ValueError("uploads: rule 'sample' needs exactly one of every_n or every_s")
        if self.rule != "sample" and (self.every_n is not None or self.every_s is not None):
            raise ValueError(f"uploads: every_n / every_s apply to rule 'sample' only, not {self.rule!r}")
        if self.rule == "low_confidence" and self.below is None:
            raise ValueError("uploads: rule 'low_confidence' needs below (a probability in (0, 1])")
        if self.rule != "low_confidence" and self.below is not None:
            raise ValueError(f"uploads: below applies to rule 'low_confidence' only, not {self.rule!r}")
        return self


class CameraConfig(_Model):
    """One camera as the hub describes it: its source, rate, classifiers, gate and upload rules."""

    name: Name
    source: str = Field(
        min_length=1,
        max_length=MAX_SOURCE_CHARS,
        description="video file, image folder, rtsp:// or http:// URL, or USB index",
    )
    fps: float = Field(default=2.0, gt=0, le=1000, description="frame-rate cap: frames kept per second")
    stall_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="a live source without a frame for this long is reconnected"
    )
    classifiers: list[ClassifierBinding] = Field(
        default_factory=list,
        max_length=MAX_CAMERA_CLASSIFIERS,
        description="empty = every active classifier on the whole frame",
    )
    gate: GateSettings = Field(default_factory=GateSettings)
    uploads: list[UploadRule] = Field(default_factory=list, max_length=MAX_UPLOAD_RULES)

    @field_validator("classifiers")
    @classmethod
    def _distinct(cls, v: list[ClassifierBinding]) -> list[ClassifierBinding]:
        seen: set[str] = set()
        for b in v:
            if b.classifier in seen:
                raise ValueError(f"classifiers: {b.classifier!r} is listed twice on one camera")
            seen.add(b.classifier)
        return v


class AgentConfig(_Model):
    """The settings the hub delivers to one agent (versioned, so the agent can report which it applied)."""

    version: int = Field(ge=0)
    cameras: list[CameraConfig] = Field(default_factory=list, max_length=MAX_AGENT_CAMERAS)

    @model_validator(mode="after")
    def _unique_cameras(self) -> AgentConfig:
        names = [c.name for c in self.cameras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"cameras: name {dupes[0]!r} is used twice")
        return self
