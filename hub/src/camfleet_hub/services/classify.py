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

from sqlalchemy.orm import Session

from camfleet_contract.bundle import BundleError, unpack_bundle
from camfleet_contract.images import ImageError, decode_image
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_contract.signing import public_key_of
from camfleet_hub.db.models import Classifier, ModelVersion
from camfleet_hub.services import announce
from camfleet_hub.services.errors import InvalidError, TooLargeError, UnavailableError

if TYPE_CHECKING:
    from camfleet_hub.app import HubServices

MAX_IMAGES = 32
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_CACHED_RUNTIMES = 8


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

    def _bundle_dir(self, model: ModelVersion) -> Path:
        """The unpacked bundle of a model, unpacked atomically (temp folder + rename) when missing."""
        target = self.root / f"{model.id}-{model.sha256[:16]}"
        if (target / "manifest.json").is_file():
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
                if not (target / "manifest.json").is_file():
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


def check_request(images: list[NamedImage]) -> None:
    """Bound the work one request can cause."""
    if not images:
        raise InvalidError("images: send at least one image")
    if len(images) > MAX_IMAGES:
        raise TooLargeError(f"images: {len(images)} images in one request, over the limit of {MAX_IMAGES}")
    for i, image in enumerate(images):
        if len(image.data) > MAX_IMAGE_BYTES:
            raise TooLargeError(
                f"images[{i}] ({image.name}): {len(image.data)} bytes, over the limit of {MAX_IMAGE_BYTES}"
            )


def classify(
    services: HubServices, session: Session, cache: RuntimeCache, classifier: Classifier, images: list[NamedImage]
) -> dict[str, object]:
    """Decode every image (a bad one is a 422 naming it), then classify them in one batch."""
    check_request(images)
    model, is_default = choose_model(session, classifier)
    max_pixels = services.settings.ingest.max_pixels
    decoded = []
    for i, image in enumerate(images):
        try:
            decoded.append(decode_image(image.data, max_pixels=max_pixels))
        except ImageError as exc:
            raise InvalidError(f"images[{i}] ({image.name}): {exc}") from None
    runtime = cache.get(model)
    results = runtime.classify(decoded)
    return {
        "model": {
            "id": model.id,
            "classifier": runtime.manifest.classifier if is_default else classifier.name,
            "version": model.version,
            "default": is_default,
        },
        "results": [
            {
                "label": r.label,
                "probability": r.probability,
                "predictions": [p.model_dump() for p in r.predictions],
                "anomaly": r.anomaly,
                "anomaly_score": r.anomaly_score,
            }
            for r in results
        ],
    }
