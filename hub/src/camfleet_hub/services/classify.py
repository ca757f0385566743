"""REST classification with a classifier's production model (or the ImageNet default), runtimes cached per model."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.orm import Session

from camfleet_contract.bundle import MANIFEST, BundleError, unpack_bundle
from camfleet_contract.images import ImageError, decode_image, probe_image
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_contract.signing import public_key_of
from camfleet_hub.config import ClassifySettings
from camfleet_hub.db.models import Classifier, ModelVersion
from camfleet_hub.services import announce
from camfleet_hub.services.errors import InvalidError, TooLargeError, UnavailableError
from camfleet_hub.serving.service import LogContext, log_predictions, score_images

if TYPE_CHECKING:
    from camfleet_hub.app import HubServices

MAX_CACHED_RUNTIMES = 8
# JPEGs decode at 1/2, 1/4 or 1/8 scale while both sides stay at least the model's resize (256 px for a 224 px
# model): a 36-megapixel photo decodes as 0.56 megapixels instead of 108 MB of RGB.
DEFAULT_SIDE = 256
# Up to this size (a 4-megapixel frame, 12 MB of RGB) JPEGs decode exactly, as the agent and the trainer do.
EXACT_DECODE_PIXELS = 4_000_000


class BusyError(UnavailableError):
    """Every classification slot is taken; the client should retry after ``retry_after`` seconds."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Slots:
    """At most ``concurrency`` requests decode and classify at once; one more is refused at once, not queued."""

    def __init__(self, limits: ClassifySettings) -> None:
        self.limits = limits
        self._sem = threading.BoundedSemaphore(limits.concurrency)

    def acquire(self) -> None:
        if not self._sem.acquire(blocking=False):
            raise BusyError(
                f"classify.concurrency={self.limits.concurrency} requests are being classified; retry shortly",
                self.limits.retry_after_s,
            )

    def release(self) -> None:
        self._sem.release()


@dataclass(frozen=True)
class NamedImage:
    """One image of a request: how to name it in an error, and its bytes."""

    name: str
    data: bytes


class RuntimeCache:
    """Loaded ``ClassifierRuntime``s by model id; each bundle is unpacked from the store into the data dir once."""

    def __init__(self, services: HubServices, max_entries: int = MAX_CACHED_RUNTIMES) -> None:
        self.services = services
        self.max_entries = max_entries
        self.root = services.settings.resolve("models")
        self._runtimes: OrderedDict[int, ClassifierRuntime] = OrderedDict()
        self._lock = threading.Lock()
        self.slots = Slots(services.settings.classify)

    def _bundle_dir(self, model: ModelVersion) -> Path:
        """The unpacked bundle of a model, unpacked atomically (temp folder + rename) when missing."""
        target = self.root / f"{model.id}-{model.sha256[:16]}"
        if (target / MANIFEST).is_file():
            return target
        data = self.services.store.get(model.sha256, prefix=announce.BUNDLE_PREFIX)
        if hashlib.sha256(data).hexdigest() != model.sha256:
            raise UnavailableError(f"stored bundle of model id={model.id} does not match its sha256")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".unpack-{model.id}-", dir=self.root))
        try:
            unpack_bundle(data, tmp / "bundle")
            try:
                os.replace(tmp / "bundle", target)
            except OSError:  # unpacked concurrently by another request: keep theirs
                if not (target / MANIFEST).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def get(self, model: ModelVersion) -> ClassifierRuntime:
        with self._lock:
            runtime = self._runtimes.get(model.id)
            if runtime is not None:
                self._runtimes.move_to_end(model.id)
                return runtime
            try:
                runtime = ClassifierRuntime(self._bundle_dir(model), public_key=public_key_of(self.services.fleet_key))
            except BundleError as exc:
                raise UnavailableError(f"model id={model.id} cannot be loaded: {exc}") from None
            self._runtimes[model.id] = runtime
            while len(self._runtimes) > self.max_entries:
                self._runtimes.popitem(last=False)
            return runtime


def choose_model(session: Session, classifier: Classifier) -> tuple[ModelVersion, bool]:
    """(model, is_default): the production model, else the ImageNet default; 503 when neither exists."""
    model = announce.production_model(session, classifier)
    if model is not None:
        return model, False
    default = announce.default_model(session)
    if default is not None:
        return default, True
    raise UnavailableError(
        f"no model exists yet for classifier {classifier.name!r}: train and promote one, "
        "or upload the ImageNet default with PUT /api/v1/models/default"
    )


def check_request(images: list[NamedImage], limits: ClassifySettings) -> None:
    """Bound the bytes one request may bring (counted before any image is looked at)."""
    if not images:
        raise InvalidError("images: send at least one image")
    if len(images) > limits.max_images:
        raise TooLargeError(
            f"images: {len(images)} images in one request, over classify.max_images={limits.max_images}"
        )
    total = 0
    for i, image in enumerate(images):
        if len(image.data) > limits.max_image_bytes:
            raise TooLargeError(
                f"images[{i}] ({image.name}): {len(image.data)} bytes, "
                f"over classify.max_image_bytes={limits.max_image_bytes}"
            )
        total += len(image.data)
    if total > limits.max_request_bytes:
        raise TooLargeError(
            f"images: {total} bytes in one request, over classify.max_request_bytes={limits.max_request_bytes}"
        )


def draft_scale(fmt: str, width: int, height: int, side: int = DEFAULT_SIDE) -> int:
    """The scale a JPEG is decoded at: 1 up to EXACT_DECODE_PIXELS, else what PIL's draft to (side, side) picks."""
    if fmt != "JPEG" or width * height <= EXACT_DECODE_PIXELS:
        return 1
    ratio = min(width // side, height // side)
    return next(s for s in (8, 4, 2, 1) if ratio >= s)  # JpegImagePlugin.draft's choice


def decoded_size(fmt: str, width: int, height: int, side: int = DEFAULT_SIDE) -> tuple[int, int]:
    scale = draft_scale(fmt, width, height, side)
    return -(-width // scale), -(-height // scale)


def check_pixels(images: list[NamedImage], limits: ClassifySettings, side: int = DEFAULT_SIDE) -> None:
    """Header-only budget: each image's pixels, and the pixels the whole request would decode (413 naming it)."""
    budget = 0
    for i, image in enumerate(images):
        try:
            fmt, w, h = probe_image(image.data)
        except ImageError as exc:
            error = TooLargeError if "too large" in str(exc) else InvalidError  # PIL's bomb check fired first
            raise error(f"images[{i}] ({image.name}): {exc}") from None
        if w * h > limits.max_image_pixels:
            raise TooLargeError(
                f"images[{i}] ({image.name}): {w}x{h} pixels, over classify.max_image_pixels={limits.max_image_pixels}"
            )
        dw, dh = decoded_size(fmt, w, h, side)
        budget += dw * dh
        if budget > limits.max_request_pixels:
            raise TooLargeError(
                f"images[{i}] ({image.name}): the request would decode {budget} pixels, over "
                f"classify.max_request_pixels={limits.max_request_pixels} (send fewer or smaller images)"
            )


def decode_bounded(data: bytes, max_pixels: int, side: int = DEFAULT_SIDE) -> np.ndarray:
    """Decode at the scale ``draft_scale`` gives: large JPEGs at 1/2 to 1/8, the rest exactly as ``decode_image``."""
    fmt, w, h = probe_image(data)
    # Only when it shrinks: a draft at scale 1 still switches libjpeg to its fast DCT and changes the pixels.
    draft = (side, side) if draft_scale(fmt, w, h, side) > 1 else None
    return decode_image(data, max_pixels=max_pixels, draft=draft)


def classify(
    services: HubServices,
    session: Session,
    cache: RuntimeCache,
    classifier: Classifier,
    images: list[NamedImage],
    caller: str = "",
) -> dict[str, object]:
    """Check sizes from the headers, decode every image at reduced scale (a bad one is a 422 naming it), classify;
    one prediction-log row per image (``caller`` is who asked)."""
    limits = services.settings.classify
    check_request(images, limits)
    model, is_default = choose_model(session, classifier)
    runtime = cache.get(model)
    spec = runtime.manifest.preprocessing
    side = max(spec.resize, spec.size)
    check_pixels(images, limits, side)
    decoded = []
    for i, image in enumerate(images):
        try:
            decoded.append(decode_bounded(image.data, limits.max_image_pixels, side))
        except ImageError as exc:
            raise InvalidError(f"images[{i}] ({image.name}): {exc}") from None
    results = score_images(runtime, decoded)  # every probability, for the log; the answer keeps the top_k
    top_k = runtime.top_k
    name = runtime.manifest.classifier if is_default else classifier.name
    answer: dict[str, object] = {
        "model": {
            "id": model.id,
            "classifier": name,
            "version": model.version,
            "default": is_default,
        },
        "results": [
            {
                "label": r.label,
                "probability": r.probability,
                "predictions": [{"label": g, "probability": p} for g, p in list(r.probabilities.items())[:top_k]],
                "anomaly": r.anomaly,
                "anomaly_score": r.anomaly_score,
            }
            for r in results
        ],
    }
    ctx = LogContext(
        site_id=classifier.site_id,
        classifier=name,
        model_id=model.id,
        model_version=model.version,
        caller=caller,
        route="classify",
    )
    log_predictions(session, ctx, [i.name for i in images], results)
    session.commit()
    return answer
