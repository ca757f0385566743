"""The trainer worker: make sure the hub has an ImageNet default, then claim and run training jobs."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from camfleet_contract.bundle import BundleError, pack_bundle, verify_bundle
from camfleet_contract.rest import Dataset, EpochMetrics, JobClaimed, JobParams
from camfleet_contract.signing import load_or_create_key
from camfleet_trainer.backbone import Backbone, BackboneError, build_backbone, configure_threads, resolve_device
from camfleet_trainer.client import HubClient, HubError, LeaseLost
from camfleet_trainer.config import TrainerSettings
from camfleet_trainer.data import DatasetError, LabeledSet, Sample
from camfleet_trainer.export import ExportError, export_imagenet_default
from camfleet_trainer.full import FullOptions
from camfleet_trainer.pipeline import (
    MODES,
    BundleTarget,
    FullBundleOptions,
    QuickBundleOptions,
    TrainOutcome,
    train_full_bundle,
    train_quick_bundle,
)
from camfleet_trainer.progress import EpochStats, Estimate, FullHooks
from camfleet_trainer.quick import QuickOptions

log = logging.getLogger(__name__)

HEARTBEAT_MIN_S = 2.0
HEARTBEAT_MAX_S = 5.0  # progress on the hub stays fresh and a cancel is noticed within seconds
DEFAULT_RETRY_S = 60.0
FULL_PARAMS = ("epochs", "batch_size", "test_size", "image_size")  # job params that tune the full mode


class JobAborted(Exception):
    """Stop working on the current job (cancelled, lease lost, or the worker is stopping); do not fail it."""


def _token(settings: TrainerSettings) -> str | None:
    return settings.api_token.get_secret_value() if settings.api_token is not None else None


def _beat_interval(lease_s: float) -> float:
    """Well inside the lease: a third of it, between HEARTBEAT_MIN_S and HEARTBEAT_MAX_S."""
    return min(HEARTBEAT_MAX_S, max(HEARTBEAT_MIN_S, lease_s / 3.0))


class JobReporter:
    """Heartbeats for one job from a background thread, so long stages never let the lease lapse.

    The training thread calls `update` at every step; it records progress, wakes the thread on a stage
    change and raises JobAborted as soon as the hub said cancel, the lease was lost, or the worker stops.
    """

    def __init__(self, client: HubClient, job_id: int, worker: str, lease_s: float, stopping: threading.Event) -> None:
        self.client = client
        self.job_id = job_id
        self.worker = worker
        self.interval = _beat_interval(lease_s)
        self.stopping = stopping
        self.abort_reason: str | None = None
        self._state = ("claimed", 0.0, "")
        self._epochs: list[EpochMetrics] = []  # per-epoch figures not yet delivered to the hub
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-job-{job_id}", daemon=True)

    def __enter__(self) -> JobReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def update(self, stage: str, progress: float, message: str) -> None:
        """Record progress (sent by the thread); raises JobAborted when the job must stop."""
        with self._lock:
            changed = stage != self._state[0]
            self._state = (stage, progress, message)
        if changed:
            self._wake.set()
        self.check()

    def add_epoch(self, metrics: EpochMetrics) -> None:
        """Queue one epoch's figures for the next heartbeat, sent at once (the hub draws them live)."""
        with self._lock:
            self._epochs.append(metrics)
        self._wake.set()
        self.check()

    def check(self) -> None:
        if self.stopping.is_set():
            raise JobAborted("the worker is stopping")
        if self.abort_reason is not None:
            raise JobAborted(self.abort_reason)

    def send(self) -> None:
        """One heartbeat with the latest progress; notes a cancel or a lost lease."""
        with self._lock:
            stage, progress, message = self._state
            epochs = list(self._epochs)
        try:
            answer = self.client.heartbeat(self.job_id, self.worker, progress, stage, message, epochs or None)
            with self._lock:
                del self._epochs[: len(epochs)]  # delivered; a failed beat keeps them for the next one
        except LeaseLost as exc:
            self.abort_reason = f"lease lost: {exc}"
            return
        except HubError as exc:  # unreachable for a while: keep training, the next beat may get through
            log.warning("job %s: heartbeat failed: %s", self.job_id, exc)
            return
        if answer.cancel:
            self.abort_reason = "cancelled on the hub"
        if answer.lease_seconds > 0:
            self.interval = _beat_interval(answer.lease_seconds)

    def _loop(self) -> None:
        while not self._done.is_set() and self.abort_reason is None:
            self.send()
            self._wake.wait(self.interval)
            self._wake.clear()


class Worker:
    """Claims jobs from the hub one at a time and runs them; `stop()` ends the loop (and the current job)."""

    def __init__(self, settings: TrainerSettings, client: HubClient | None = None) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.client = client or HubClient(
            settings.hub_url, settings.request_timeout_s, settings.retries, _token(settings), sleep=self._backoff
        )
        self.device = resolve_device(settings.device)
        self.cache_dir = settings.cache_dir
        self._backbone: Backbone | None = None
        self._other_backbones: dict[str, Backbone] = {}
        self._default_ok = False
        self._default_tried_at = -DEFAULT_RETRY_S

    def stop(self) -> None:
        self.stopping.set()

    def _backoff(self, seconds: float) -> None:
        """The client's wait between retries, cut short (with an error) when the worker stops."""
        if self.stopping.wait(seconds):
            raise HubError("the worker is stopping")

    @property
    def backbone(self) -> Backbone:
        """Built once per process: the weights load takes a second or two."""
        if self._backbone is None:
            configure_threads(self.settings.threads)
            self._backbone = build_backbone(self.settings.backbone, self.settings.checkpoint)
        return self._backbone

    def backbone_for(self, name: str | None) -> Backbone:
        """The configured backbone, or another one a job asks for (packaged weights only), built once."""
        if not name or name == self.settings.backbone:
            return self.backbone
        if name not in self._other_backbones:
            self._other_backbones[name] = build_backbone(name)
        return self._other_backbones[name]

    def seed(self) -> str:
        return load_or_create_key(self.settings.key_path)

    # ------------------------------------------------------------------ loop

    def run(self, max_jobs: int | None = None) -> int:
        """Poll for jobs until stopped (or `max_jobs` were handled); returns how many jobs were handled."""
        handled = 0
        _ = self.backbone  # a missing weights package is a start-up error, not every job's failure
        log.info("trainer %s polling %s (device %s)", self.settings.worker, self.settings.hub_url, self.device)
        while not self.stopping.is_set() and (max_jobs is None or handled < max_jobs):
            self.ensure_default_model()
            if self.stopping.is_set():
                break
            try:
                claimed = self.client.claim(self.settings.worker, self.device.type == "cuda")
            except HubError as exc:
                log.warning("cannot claim a job: %s", exc)
                claimed = None
            if claimed is None:
                self.stopping.wait(self.settings.poll_interval_s)
                continue
            self.process(claimed)
            handled += 1
        return handled

    def ensure_default_model(self) -> None:
        """Upload the ImageNet default bundle when the hub has none (retried every minute until it works)."""
        if self._default_ok or time.monotonic() - self._default_tried_at < DEFAULT_RETRY_S:
            return
        self._default_tried_at = time.monotonic()
        try:
            if self.client.get_default_model() is None:
                bundle = self.default_bundle()
                log.info("the hub has no default model; uploading %s", bundle)
                self.client.put_default_model(pack_bundle(bundle))
            self._default_ok = True
        except (HubError, BackboneError, ExportError, BundleError, OSError) as exc:
            log.warning("could not provide the hub's default model (will retry): %s", exc)

    def default_bundle(self) -> Path:
        """The ImageNet default bundle, built once and kept in the cache."""
        folder = self.cache_dir / "default" / self.backbone.cache_key
        if folder.is_dir():
            try:
                verify_bundle(folder, None)
                return folder
            except BundleError as exc:
                log.warning("cached default bundle %s is unusable (%s); rebuilding", folder, exc)
        export_imagenet_default(folder, self.seed(), backbone=self.backbone, overwrite=True)
        return folder

    # ------------------------------------------------------------------ one job

    def process(self, claimed: JobClaimed) -> str:
        """Run one claimed job to a result, a failure report, or an abort; returns which."""
        job = claimed.job
        job_id = job.id
        lease = claimed.lease_seconds or 60.0
        log.info("job %s claimed (%s/%s, mode %s)", job_id, job.site, job.classifier, job.mode)
        work = Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=self._tmp_root()))
        try:
            with JobReporter(self.client, job_id, self.settings.worker, lease, self.stopping) as reporter:
                try:
                    mode = job.mode or "quick"
                    if mode not in MODES:
                        raise DatasetError(f"mode: {mode!r} is not supported by this trainer ({', '.join(MODES)})")
                    outcome = self._train(job_id, mode, _job_params(job.params), reporter, work / "bundle")
                    reporter.update("upload", 0.99, "uploading the bundle")
                    model = self.client.upload_result(job_id, pack_bundle(outcome.bundle_dir))
                    accuracy = outcome.metrics.get("val_accuracy", outcome.metrics.get("oof_accuracy"))
                    log.info("job %s done (%s): model %s, accuracy %s", job_id, mode, model.version, accuracy)
                    return "succeeded"
                except JobAborted as exc:
                    log.warning("job %s aborted: %s", job_id, exc)
                    return "aborted"
                except LeaseLost as exc:
                    log.warning("job %s: lease lost: %s", job_id, exc)
                    return "aborted"
                except (DatasetError, ExportError, BackboneError) as exc:
                    return self._fail(job_id, str(exc))
                except HubError as exc:
                    log.error("job %s: the hub is unreachable or refused a call: %s", job_id, exc)
                    return self._fail(job_id, f"hub error: {exc}")
                except Exception as exc:  # a bug or a broken environment: report it, keep serving
                    log.exception("job %s failed", job_id)
                    return self._fail(job_id, f"trainer error: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _train(self, job_id: int, mode: str, params: JobParams, reporter: JobReporter, out: Path) -> TrainOutcome:
        """Download the job's dataset and train it in its mode (the job's params tune it) into a signed bundle."""
        full = self._full_options(params) if mode == "full" else None
        backbone = self.backbone_for(params.backbone)
        known = self._hub_vectors(job_id) if mode == "quick" and self.settings.hub_embeddings else None
        # With the hub's vectors a quick job reads only a few images (checks, parity): fetch on demand.
        data, name = self._dataset(job_id, reporter, lazy=bool(known))
        target = BundleTarget(out, self.seed(), classifier=name, device=self.device, on_stage=reporter.update)
        if full is not None:
            hooks = _epoch_reports(reporter)
            return train_full_bundle(data, backbone, target, FullBundleOptions(full, hooks, _int8(params, True)))
        quick = QuickOptions(target_flag_rate=self.settings.target_flag_rate)
        return train_quick_bundle(
            data, backbone, target, QuickBundleOptions(quick, self.cache_dir, known, _int8(params, False))
        )

    def _full_options(self, params: JobParams) -> FullOptions:
        """The full mode's options from the job's params; a bad value fails the job naming it."""
        given = {k: getattr(params, k) for k in FULL_PARAMS if getattr(params, k) is not None}
        try:
            return FullOptions(**given, target_flag_rate=self.settings.target_flag_rate)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise DatasetError(f"params.{first['loc'][0]}={first.get('input')!r}: {first['msg']}") from None

    def _tmp_root(self) -> Path:
        root = self.cache_dir / "work"
        root.mkdir(parents=True, exist_ok=True)
        return root

    def _fail(self, job_id: int, reason: str) -> str:
        log.error("job %s failed: %s", job_id, reason)
        try:
            self.client.fail(job_id, self.settings.worker, reason)
        except HubError as exc:
            log.error("job %s: could not report the failure: %s", job_id, exc)
        return "failed"

    def _dataset(self, job_id: int, reporter: JobReporter, lazy: bool = False) -> tuple[LabeledSet, str]:
        """The job's image list, every image downloaded now (cached by sha256), or with `lazy` on first read;
        an image missing on the hub is skipped (now) or fails its read like an unreadable file (lazy)."""
        reporter.update("download", 0.0, "fetching the dataset")
        ds: Dataset = self.client.dataset(job_id)
        classes = list(ds.classes)
        index = {name: i for i, name in enumerate(classes)}
        images = ds.images
        samples: list[Sample] = []
        for n, item in enumerate(images, 1):
            group = item.group
            if group not in index:
                log.warning("job %s: image %s is in group %r, not in classes; skipped", job_id, item.id, group)
                continue
            sha256 = _checked_sha256(item.sha256)
            read: Callable[[], bytes]
            if lazy:
                read = functools.partial(self._read_blob, sha256)
            else:
                path = self._blob(sha256)
                if path is None:
                    log.warning("job %s: image %s (%s) is missing on the hub; skipped", job_id, item.id, group)
                    continue
                read = path.read_bytes
            samples.append(Sample(f"image {item.id}", sha256, index[group], read, item.cluster))
            if not lazy and (n % 25 == 0 or n == len(images)):
                reporter.update("download", 0.05 * n / max(len(images), 1), f"downloaded {n}/{len(images)} images")
        return LabeledSet(classes, samples), ds.classifier or "classifier"

    def _read_blob(self, sha256: str) -> bytes:
        """An image's bytes, downloaded on first use; OSError when the hub no longer has it (skipped like a
        corrupt file)."""
        path = self._blob(sha256)
        if path is None:
            raise FileNotFoundError(f"sha256 {sha256} is missing on the hub")
        return path.read_bytes()

    def _hub_vectors(self, job_id: int) -> dict[str, np.ndarray]:
        """The embeddings the hub computed at import, so a quick job need not run the backbone on them again;
        without them (an old hub, an error) the trainer computes its own."""
        try:
            return self.client.embeddings(job_id)
        except HubError as exc:
            log.warning("job %s: no embeddings from the hub (%s); computing them here", job_id, exc)
            return {}

    def _blob(self, sha256: str) -> Path | None:
        """The image file in the local cache, downloading it once."""
        path = self.cache_dir / "blobs" / sha256[:2] / sha256
        if path.is_file():
            return path
        data = self.client.blob(sha256)
        if data is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path


def _checked_sha256(sha256: str) -> str:
    """A dataset's sha256 as a lowercase hex digest (it names a cache file), or HubError."""
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise HubError(f"dataset: sha256 {sha256!r} is not a lowercase hex digest")
    return sha256


def _epoch_reports(reporter: JobReporter) -> FullHooks:
    """Full-mode figures for the hub: epoch 0 is the model before fine-tuning, with the estimate as its ETA."""

    def estimate(e: Estimate) -> None:
        start = EpochMetrics(epoch=0, eta_s=round(e.total_s, 1))
        if e.start_val_acc is not None and e.start_val_loss is not None:
            start = start.model_copy(
                update={"val_acc": round(e.start_val_acc, 4), "val_loss": round(e.start_val_loss, 5)}
            )
        reporter.add_epoch(start)

    def epoch(stats: EpochStats) -> None:
        reporter.add_epoch(stats.hub_metrics())

    return FullHooks(estimate=estimate, epoch=epoch)


def _job_params(params: dict[str, Any]) -> JobParams:
    """The job's params as the contract's JobParams (the hub checked them at creation); a bad value fails the job
    naming it."""
    try:
        return JobParams.model_validate(params, strict=True)  # "yes" is not a boolean here
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DatasetError(f"params.{where}={first.get('input')!r}: {first['msg']}") from None


def _int8(params: JobParams, default: bool) -> bool:
    """The job's int8 choice, or the mode's default when the job did not say."""
    return default if params.int8 is None else params.int8
