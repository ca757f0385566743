"""REST classification with a classifier's production model (or the ImageNet default), runtimes cached per model.

Requests decode and preprocess in their own threads (at most ``classify.concurrency`` at once), then hand the
tensors to the model's ``Batcher``, which runs concurrent requests as one ONNX Runtime batch.
"""

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

import httpx
import numpy as np
from sqlalchemy.orm import Session

from camfleet_contract.bundle import MANIFEST, MODEL_INT8, PRECISION, BundleError, Manifest, Precision, unpack_bundle
from camfleet_contract.images import ImageError, decode_image, preprocess_batch, probe_image
from camfleet_contract.runtime import ClassifierRuntime, int8_usable
from camfleet_contract.signing import public_key_of
from camfleet_hub.core.config import ClassifySettings, HubSettings
from camfleet_hub.core.errors import InvalidError, TooLargeError, UnavailableError
from camfleet_hub.datasets.models import Classifier
from camfleet_hub.imports.fetch import FetchError, FetchLimits, fetch
from camfleet_hub.serving.batcher import Batcher, BatchLimits, BusyError
from camfleet_hub.serving.schemas import ClassifyAnswer, ClassifyResult, ModelRef, PredictionPublic
from camfleet_hub.serving.service import LogContext, PredictionLogWriter, score_outputs
from camfleet_hub.training import announce
from camfleet_hub.training.models import ModelVersion

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubCore, HubServices

MAX_CACHED_RUNTIMES = 8
# JPEGs decode at 1/2, 1/4 or 1/8 scale while both sides stay at least the model's resize (256 px for a 224 px
# model): a 36-megapixel photo decodes as 0.56 megapixels instead of 108 MB of RGB.
DEFAULT_SIDE = 256
# Up to this size (a 4-megapixel frame, 12 MB of RGB) JPEGs decode exactly, as the agent and the trainer do.
EXACT_DECODE_PIXELS = 4_000_000


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


__all__ = ["BusyError", "NamedImage", "Prepared", "RuntimeCache", "choose_precision", "classify", "finish", "prepare"]


def choose_precision(settings: HubSettings, site: str, classifier: str, manifest: Manifest) -> Precision:
    """The precision signed into a bundle at registration (hub and agents then run the same file): the
    classifier's ``classify.precision_by_classifier`` entry, else ``classify.precision``; INT8 only when the
    bundle ships an INT8 model the trainer vouched for, else FP32."""
    limits = settings.classify
    wanted = limits.precision_by_classifier.get(f"{site}/{classifier}", limits.precision)
    return "int8" if wanted == "int8" and int8_usable(manifest) else "fp32"


def model_precision(model: ModelVersion) -> Precision:
    """What the hub runs for a registered model: the signed choice; FP32 for bundles registered before it."""
    metrics = model.manifest.get("metrics") or {}
    return "int8" if metrics.get(PRECISION) == "int8" else "fp32"


@dataclass(frozen=True)
class NamedImage:
    """One image of a request: how to name it in an error, and its bytes."""

    name: str
    data: bytes


class RuntimeCache:
    """Loaded ``ClassifierRuntime``s (each with its ``Batcher``) by model id; each bundle is unpacked from the
    store into the data dir once. The runtime runs the precision signed into the model's manifest."""

    def __init__(self, services: HubCore, max_entries: int = MAX_CACHED_RUNTIMES) -> None:
        self.services = services
        self.max_entries = max_entries
        self.root = services.settings.resolve("models")
        self._runtimes: OrderedDict[int, tuple[ClassifierRuntime, Batcher]] = OrderedDict()
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

    def entry(self, model: ModelVersion) -> tuple[ClassifierRuntime, Batcher]:
        with self._lock:
            entry = self._runtimes.get(model.id)
            if entry is not None:
                self._runtimes.move_to_end(model.id)
                return entry
            s = self.services.settings.classify
            runners, threads = s.run_layout()
            try:
                runtime = ClassifierRuntime(
                    self._bundle_dir(model),
                    public_key=public_key_of(self.services.fleet_signing_key),
                    threads=threads,
                    prefer_int8=model_precision(model) == "int8",
                )
            except BundleError as exc:
                raise UnavailableError(f"model id={model.id} cannot be loaded: {exc}") from None
            limits = BatchLimits(s.max_batch, s.batch_wait_ms / 1000.0, s.queue_images, s.retry_after_s, runners)
            entry = (runtime, Batcher(runtime.run, limits, name=f"model id={model.id}"))
            self._runtimes[model.id] = entry
            while len(self._runtimes) > self.max_entries:
                _id, (_rt, old) = self._runtimes.popitem(last=False)
                old.close()  # queued requests still finish; the worker then exits
            return entry

    def get(self, model: ModelVersion) -> ClassifierRuntime:
        return self.entry(model)[0]

    def batcher(self, model: ModelVersion) -> Batcher | None:
        """The model's batcher when it is loaded (its stats count batches), else None."""
        with self._lock:
            entry = self._runtimes.get(model.id)
            return None if entry is None else entry[1]


def choose_model(session: Session, classifier: Classifier) -> tuple[ModelVersion, bool]:
    """(model, is_default): the production model, else the ImageNet default; 503 when neither exists."""
    model = announce.serving_model(session, classifier)
    if model is not None:
        return model, model.classifier_id is None
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


def fetch_urls(urls: list[str], settings: HubSettings) -> list[NamedImage]:
    """Image URLs fetched one after the other through the URL-import guard; a refused one is a 422 naming it."""
    s = settings.imports
    limits = FetchLimits(s.url_max_bytes, s.url_timeout_s, s.url_max_redirects, s.url_allow_private)
    images = []
    with httpx.Client(timeout=httpx.Timeout(limits.timeout_s), headers={"User-Agent": "camfleet-hub/1"}) as client:
        for i, url in enumerate(urls):
            try:
                images.append(NamedImage(url[:512], fetch(client, url, limits)))
            except FetchError as exc:
                raise InvalidError(f"urls[{i}]: {exc}") from None
    return images


@dataclass
class Prepared:
    """A request decoded and preprocessed, ready for its model's batcher."""

    classifier: Classifier
    model: ModelVersion
    is_default: bool
    runtime: ClassifierRuntime
    batcher: Batcher
    names: list[str]
    batch: np.ndarray


def prepare(
    services: HubServices, session: Session, cache: RuntimeCache, classifier: Classifier, images: list[NamedImage]
) -> Prepared:
    """Check sizes from the headers, decode every image at reduced scale (a bad one is a 422 naming it) and
    preprocess: the part that needs a ``classify.concurrency`` slot."""
    limits = services.settings.classify
    check_request(images, limits)
    model, is_default = choose_model(session, classifier)
    runtime, batcher = cache.entry(model)
    spec = runtime.manifest.preprocessing
    side = max(spec.resize, spec.size)
    check_pixels(images, limits, side)
    decoded = []
    for i, image in enumerate(images):
        try:
            decoded.append(decode_bounded(image.data, limits.max_image_pixels, side))
        except ImageError as exc:
            raise InvalidError(f"images[{i}] ({image.name}): {exc}") from None
    # Only the tensors wait in the batch queue, not the decoded images or the request's bytes.
    batch = preprocess_batch(decoded, spec)
    return Prepared(classifier, model, is_default, runtime, batcher, [i.name for i in images], batch)


def finish(log: PredictionLogWriter, prepared: Prepared, caller: str = "", top_k: int | None = None) -> ClassifyAnswer:
    """Run the batch with whatever else waits for the model, answer the ``top_k`` and log one row per image."""
    p = prepared
    logits, embedding = p.batcher.submit(p.batch)
    results = score_outputs(p.runtime, logits, embedding)  # every probability, for the log; the answer keeps top_k
    k = min(top_k or p.runtime.top_k, len(p.runtime.classes))
    name = p.runtime.manifest.classifier if p.is_default else p.classifier.name
    answer = ClassifyAnswer(
        model=ModelRef(
            id=p.model.id,
            classifier=name,
            version=p.model.version,
            default=p.is_default,
            precision="int8" if p.runtime.model_file == MODEL_INT8 else "fp32",
        ),
        results=[
            ClassifyResult(
                label=r.label,
                probability=r.probability,
                predictions=[PredictionPublic(label=g, probability=q) for g, q in r.top(k).items()],
                anomaly=r.anomaly,
                anomaly_score=r.anomaly_score,
            )
            for r in results
        ],
    )
    ctx = LogContext(
        site_id=p.classifier.site_id,
        classifier=name,
        model_id=p.model.id,
        model_version=p.model.version,
        caller=caller,
        route="classify",
    )
    log.write(ctx, p.names, results)
    return answer


def classify(
    services: HubServices,
    session: Session,
    cache: RuntimeCache,
    classifier: Classifier,
    images: list[NamedImage],
    caller: str = "",
    top_k: int | None = None,
) -> ClassifyAnswer:
    """``prepare`` then ``finish`` in one call (callers that hold no concurrency slot)."""
    return finish(services.prediction_log, prepare(services, session, cache, classifier, images), caller, top_k)
