"""The one image decoding and preprocessing used by hub, agent and trainer alike."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

# A 24-megapixel photo passes; a "decompression bomb" claiming 50000x50000 does not.
MAX_PIXELS = 40_000_000
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"})


class ImageError(ValueError):
    """Bytes that are not a usable image; the message says why."""


class Preprocessing(BaseModel):
    """How a bundle's model wants its input: stored in the manifest, applied by `preprocess`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(default=224, ge=16, le=1024)
    resize: int = Field(default=256, ge=16, le=2048, description="shorter side before the centre crop")
    crop: Literal["center"] = "center"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    color: Literal["RGB"] = "RGB"
    interpolation: Literal["area"] = "area"


def probe_image(data: bytes) -> tuple[str, int, int]:
    """Format and size from the header alone: cheap, and safe against decompression bombs."""
    # No warnings.catch_warnings() here or below: it swaps process-wide filters and is not thread-safe.
    # Sizes are checked explicitly instead (decode_image's max_pixels).
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h) = img.format or "", img.size
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"not a readable image ({type(exc).__name__}: {exc})") from None
    if fmt not in ALLOWED_FORMATS:
        raise ImageError(f"unsupported image format {fmt or 'unknown'!r}; use one of {sorted(ALLOWED_FORMATS)}")
    return fmt, w, h


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, draft: tuple[int, int] | None = None) -> np.ndarray:
    """Decode to an (H, W, 3) uint8 RGB array, upright per EXIF.

    Raises ImageError for non-images, unsupported formats, absurd sizes, truncated or corrupt data.
    `draft` lets JPEG decode at a reduced scale (still a full pass over the entropy-coded data).
    """
    fmt, w, h = probe_image(data)
    if w * h > max_pixels or w < 1 or h < 1:
        raise ImageError(f"image of {w}x{h} pixels exceeds the limit of {max_pixels} pixels")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if draft is not None and fmt == "JPEG":
                img.draft("RGB", draft)
            img.load()
            upright = ImageOps.exif_transpose(img) or img
            rgb = np.asarray(upright.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"corrupt or truncated {fmt} image ({exc})") from None
    return np.ascontiguousarray(rgb)


def check_decodes(data: bytes, draft: tuple[int, int] | None = None) -> None:
    """A real decode pass that keeps no pixels (greyscale, reduced scale for JPEG with `draft`).

    For gatekeeping at ingest: it catches corrupt and truncated data at a fraction of decode_image's cost.
    Call probe_image first: this does not check the size.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            if draft is not None and img.format == "JPEG":
                img.draft("L", draft)
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"corrupt or truncated image ({exc})") from None


def encode_jpeg(rgb: np.ndarray, quality: int = 90, *, bgr: bool = False) -> bytes:
    """A JPEG of an RGB array (or of a BGR one, OpenCV's own order, with `bgr`)."""
    pixels = rgb if bgr else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError(f"could not encode an image of shape {rgb.shape} as JPEG")
    return buf.tobytes()


# Below this factor the last step is bilinear: OpenCV's area average at a non-integer factor is ~8x slower, and at
# 720 -> 240 -> 224 (a 720p camera frame) the two differ by 0.2 grey levels on average.
LINEAR_BELOW = 1.25


def _downscale(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average to `size` (w, h); an integer-factor pass first, which OpenCV does several times faster."""
    w, h = size
    k = min(img.shape[1] // w, img.shape[0] // h)
    if k >= 2:
        img = cv2.resize(img, (img.shape[1] // k, img.shape[0] // k), interpolation=cv2.INTER_AREA)
    if (img.shape[1], img.shape[0]) == (w, h):
        return img
    area = img.shape[1] > w * LINEAR_BELOW or img.shape[0] > h * LINEAR_BELOW
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)


def thumbnail_jpeg(rgb: np.ndarray, size: int = 256, quality: int = 80) -> bytes:
    """A JPEG whose longer side is at most `size`."""
    h, w = rgb.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale < 1.0:
        rgb = _downscale(rgb, (max(1, round(w * scale)), max(1, round(h * scale))))
    return encode_jpeg(rgb, quality)


def preprocess(rgb: np.ndarray, spec: Preprocessing, *, bgr: bool = False) -> np.ndarray:
    """Resize the shorter side to `resize`, centre-crop `size`, normalise: (3, S, S) float32.

    The crop is cut from the source first and only that region is resampled (same geometry, less work). With
    `bgr` the array is in OpenCV's channel order (a camera frame as decoded): the channels are swapped on the
    small result instead of converting the whole frame first, with the same output.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"expected an (H, W, 3) uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
    h, w = rgb.shape[:2]
    side = max(1, min(h, w, round(min(h, w) * spec.size / max(spec.resize, spec.size))))
    top, left = (h - side) // 2, (w - side) // 2
    return normalise(_downscale(rgb[top : top + side, left : left + side], (spec.size, spec.size)), spec, bgr=bgr)


def normalise(img: np.ndarray, spec: Preprocessing, *, unit: bool = False, bgr: bool = False) -> np.ndarray:
    """An (S, S, 3) RGB image (BGR with `bgr`) → (3, S, S) float32 RGB with the spec's mean and std: the one
    normalisation that inference (`preprocess`) and training (the trainer's augmentation) share. Values are 0-255
    (uint8 or float), or 0-1 with `unit`."""
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    out = (img[..., ::-1] if bgr else img).transpose(2, 0, 1).astype(np.float32, order="C")
    out *= 1.0 / ((1.0 if unit else 255.0) * std)
    out -= np.asarray(spec.mean, dtype=np.float32)[:, None, None] / std
    return out


def preprocess_batch(images: Sequence[np.ndarray], spec: Preprocessing, *, bgr: bool = False) -> np.ndarray:
    """(N, 3, S, S) float32 batch."""
    if not images:
        return np.zeros((0, 3, spec.size, spec.size), dtype=np.float32)
    return np.stack([preprocess(img, spec, bgr=bgr) for img in images])
