"""Region-of-interest crops: a classifier that watches one part of the frame sees only that part.

The crop is the region's bounding box; for a polygon, pixels outside the polygon are set to black, so the
classifier's preprocessing (resize, centre crop, normalise) sees what the site drew and nothing beside it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from camfleet_contract.agent_config import Region


def pixel_box(region: Region, width: int, height: int) -> tuple[int, int, int, int]:
    """The region's bounding box in pixels [x0, y0, x1, y1), at least one pixel wide and high."""
    x0, y0, x1, y1 = region.bounds()
    px0 = min(width - 1, max(0, math.floor(x0 * width)))
    py0 = min(height - 1, max(0, math.floor(y0 * height)))
    px1 = max(px0 + 1, min(width, math.ceil(x1 * width)))
    py1 = max(py0 + 1, min(height, math.ceil(y1 * height)))
    return px0, py0, px1, py1


class RegionCropper:
    """Crops frames to one region; the polygon mask is built once per frame size."""

    def __init__(self, region: Region | None) -> None:
        self.region = region
        self._masks: dict[tuple[int, int], np.ndarray] = {}

    def crop(self, pixels: np.ndarray) -> np.ndarray:
        """The part of `pixels` the region covers (the whole frame when there is no region)."""
        if self.region is None:
            return pixels
        height, width = pixels.shape[:2]
        x0, y0, x1, y1 = pixel_box(self.region, width, height)
        out = pixels[y0:y1, x0:x1]
        if self.region.polygon is None:
            return out
        mask = self._mask(width, height, (x0, y0, x1, y1))
        return np.where(mask[..., None], out, 0).astype(pixels.dtype)

    def _mask(self, width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
        mask = self._masks.get((width, height))
        if mask is None:
            assert self.region is not None
            x0, y0, x1, y1 = box
            pts = np.array([[x * width - x0, y * height - y0] for x, y in self.region.points()], np.float64)
            canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
            mask = canvas.astype(bool)
            self._masks[(width, height)] = mask
        return mask
