"""Motion / change gate: decides on a small grey copy of each frame whether it is worth classifying.

A still scene costs one resize + one background-subtraction step per frame instead of every classifier; it is
classified again every `keepalive_s` so its events never go silent. The result carries a motion score (share of
the unmasked frame that changed) and the changed regions as normalised boxes, for the event.

>>> gate = MotionGate(GateSettings(sensitivity=0.6, keepalive_s=30))
>>> decision = gate.check(bgr)
>>> if decision.classify: ...
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from camfleet_contract.agent_config import GateSettings

Box = tuple[float, float, float, float]
GateReason = Literal["off", "first", "motion", "keepalive", "still"]
MAX_REGIONS = 16  # the largest changed regions an event carries
# Per-pixel thresholds at sensitivity 0 and 1, interpolated geometrically (0.5 gives OpenCV's default 16 for MOG2).
MOG2_VAR = (64.0, 4.0)
DIFF_LEVEL = (64.0, 6.0)


@dataclass(frozen=True)
class GateDecision:
    """Whether to classify a frame, why, and what changed (`motion` is None when the gate is off)."""

    classify: bool
    reason: GateReason
    motion: float | None = None
    regions: list[Box] = field(default_factory=list)


def _between(pair: tuple[float, float], s: float) -> float:
    lo, hi = pair
    return float(lo ** (1.0 - s) * hi**s)


def polygon_mask(shape: tuple[int, int], polygons: Sequence[Sequence[tuple[float, float]]]) -> np.ndarray:
    """uint8 mask of `shape` (h, w): 0 inside the normalised `polygons`, 255 elsewhere."""
    h, w = shape
    mask = np.full((h, w), 255, np.uint8)
    for poly in polygons:
        pts = np.array([[round(x * (w - 1)), round(y * (h - 1))] for x, y in poly], np.int32)
        cv2.fillPoly(mask, [pts], 0)
    return mask


class MotionGate:
    """One camera's gate (not thread-safe: call `check` from one thread, the camera's capture thread)."""

    def __init__(self, settings: GateSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._input: tuple[int, int] | None = None  # (w, h) of the camera's frames
        self._size: tuple[int, int] | None = None  # (w, h) of the small copy
        self._mask: np.ndarray | None = None
        self._usable = 0
        self._previous: np.ndarray | None = None
        self._mog2: cv2.BackgroundSubtractorMOG2 | None = None
        self._last_classified: float | None = None
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))

    def check(self, bgr: np.ndarray) -> GateDecision:
        """Look at one BGR frame (the camera's, as decoded); say whether to classify it."""
        s = self.settings
        if not s.enabled:
            return GateDecision(classify=True, reason="off")
        grey = self._small_grey(bgr)
        changed = self._changed(grey)
        now = self._clock()
        if changed is None:  # nothing to compare with yet: classify so the camera reports at once
            self._last_classified = now
            return GateDecision(classify=True, reason="first", motion=0.0)
        motion, regions = self._measure(changed)
        if regions:
            self._last_classified = now
            return GateDecision(classify=True, reason="motion", motion=motion, regions=regions)
        if s.keepalive_s > 0 and (self._last_classified is None or now - self._last_classified >= s.keepalive_s):
            self._last_classified = now
            return GateDecision(classify=True, reason="keepalive", motion=motion)
        return GateDecision(classify=False, reason="still", motion=motion)

    # ------------------------------------------------------------------ steps

    def _small_grey(self, bgr: np.ndarray) -> np.ndarray:
        h, w = bgr.shape[:2]
        width = min(self.settings.width, w)
        size = (width, max(1, round(h * width / w)))
        if (w, h) != self._input:  # first frame, or the camera changed resolution: start over
            self._input, self._size = (w, h), size
            self._mask = polygon_mask((size[1], size[0]), self.settings.mask)
            self._usable = int(np.count_nonzero(self._mask))
            self._previous = None
            self._mog2 = None
        small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(grey, (5, 5), 0)

    def _changed(self, grey: np.ndarray) -> np.ndarray | None:
        """Binary image of changed pixels, or None for the first frame of a size."""
        s = self.settings
        if s.method == "mog2":
            first = self._mog2 is None
            if self._mog2 is None:
                self._mog2 = cv2.createBackgroundSubtractorMOG2(
                    history=500, varThreshold=_between(MOG2_VAR, s.sensitivity), detectShadows=False
                )
            fg = self._mog2.apply(grey)
            if first:
                return None
            return fg
        previous, self._previous = self._previous, grey
        if previous is None:
            return None
        _, fg = cv2.threshold(cv2.absdiff(grey, previous), _between(DIFF_LEVEL, s.sensitivity), 255, cv2.THRESH_BINARY)
        return fg

    def _measure(self, changed: np.ndarray) -> tuple[float, list[Box]]:
        """Motion score and the normalised boxes of changed regions of at least `min_area`."""
        assert self._mask is not None and self._size is not None
        fg = cv2.bitwise_and(changed, self._mask)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._kernel)  # single-pixel noise is not motion
        motion = float(np.count_nonzero(fg)) / self._usable if self._usable else 0.0
        fg = cv2.dilate(fg, self._kernel, iterations=2)  # join the pieces of one moving thing
        contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        w, h = self._size
        min_px = self.settings.min_area * w * h
        found: list[tuple[float, Box]] = []
        for contour in contours:
            area = cv2.contourArea(contour)
            if area < min_px or area <= 0:
                continue
            x, y, bw, bh = cv2.boundingRect(contour)
            found.append((area, (x / w, y / h, min(1.0, (x + bw) / w), min(1.0, (y + bh) / h))))
        found.sort(key=lambda item: -item[0])
        boxes = [tuple(round(v, 4) for v in box) for _, box in found[:MAX_REGIONS]]
        return min(1.0, motion), boxes  # type: ignore[return-value]
