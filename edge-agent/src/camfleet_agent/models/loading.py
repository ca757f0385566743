"""Loading a bundle folder: verified against the fleet key, then into ONNX Runtime at the signed precision."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from camfleet_contract.bundle import BundleError, read_precision, read_signature
from camfleet_contract.messages import ModelAnnouncement
from camfleet_contract.runtime import ClassifierRuntime

from ..keys import FleetKeyError
from .errors import ModelUpdateError, TransientUpdateError

log = logging.getLogger(__name__)


def load_runtime(
    bundle_dir: Path,
    classifier: str,
    version: str,
    public_key: Callable[[], str],
    *,
    top_k: int,
    use_int8: bool,
    threads: int | None = None,
) -> ClassifierRuntime:
    """Verify against the fleet key and load into ONNX Runtime: a broken bundle fails here."""
    try:
        key = public_key()
    except FleetKeyError as exc:
        raise TransientUpdateError(str(exc)) from None
    try:
        # The hub signs each bundle's precision so hub and agents answer alike; use_int8 is for older bundles.
        signed = read_precision(bundle_dir)
        prefer_int8 = use_int8 if signed is None else signed == "int8"
        runtime = ClassifierRuntime(bundle_dir, public_key=key, top_k=top_k, prefer_int8=prefer_int8, threads=threads)
    except BundleError as exc:
        raise ModelUpdateError(str(exc)) from None
    except Exception as exc:  # ORT/usearch failures that the runtime did not wrap
        raise ModelUpdateError(f"bundle cannot be loaded: {type(exc).__name__}: {exc}") from None
    if runtime.version != version:
        raise ModelUpdateError(f"manifest version {runtime.version!r} != announced version={version!r}")
    log.info("model %s/%s runs %s", classifier, version, runtime.model_file)
    return runtime


def check_signature(bundle_dir: Path, announcement: ModelAnnouncement) -> None:
    """The announced signature should be the bundle's; a difference is worth a warning, not a rejection."""
    try:
        signature = read_signature(bundle_dir)
    except BundleError:
        return
    if signature != announcement.signature:
        log.warning(
            "model %s/%s: the announced signature differs from the bundle's manifest.sig",
            announcement.classifier,
            announcement.version,
        )
