"""The trainer worker: make sure the hub has an ImageNet default, then claim and run training jobs."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from camfleet_contract.bundle import BundleError, pack_bundle, verify_bundle
from camfleet_contract.rest import COMPARE_MODE, EpochMetrics, JobClaimed, JobParams, ModelComparison
from camfleet_contract.signing import load_or_create_key
from camfleet_trainer.backbone import Backbone, BackboneError, build_backbone, configure_threads, resolve_device
from camfleet_trainer.client import HubClient, HubError, LeaseLost
from camfleet_trainer.compare import compare_backbones
from camfleet_trainer.config import TrainerSettings
from camfleet_trainer.data import DatasetError
from camfleet_trainer.export import ExportError, export_imagenet_default
from camfleet_trainer.full import FullOptions
from camfleet_trainer.full_bundle import FullBundleOptions, train_full_bundle
from camfleet_trainer.heartbeat import JobAborted, JobReporter
from camfleet_trainer.job_images import JobImages
from camfleet_trainer.pipeline import MODES, BundleTarget, TrainOutcome
from camfleet_trainer.progress import EpochStats, Estimate, FullHooks
from camfleet_trainer.quick import QuickOptions
from camfleet_trainer.quick_bundle import QuickBundleOptions, train_quick_bundle
from camfleet_trainer.stack import stack_backbones

log = logging.getLogger(__name__)

DEFAULT_RETRY_S = 60.0
FULL_PARAMS = ("epochs", "batch_size", "test_size", "image_size")  # job params that tune the full mode


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
        self.images = JobImages(self.client, settings.cache_dir)
        self._backbone: Backbone | None = None
        self._other_backbones: dict[str, Backbone] = {}
        self._quick: Backbone | None = None
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

    @property
    def quick_backbone(self) -> Backbone:
        """The quick model's features: `quick_backbones` on one input, `quick_view`, `quick_pooling`; built once."""
        if self._quick is None:
            members = [self.backbone_for(name) for name in self.settings.quick_backbones]
            self._quick = stack_backbones(members, self.settings.quick_view, self.settings.quick_pooling)
        return self._quick

    def quick_backbone_for(self, name: str | None) -> Backbone:
        """The configured quick recipe, or the one backbone a job names (with the configured view)."""
        if not name:
            return self.quick_backbone
        return stack_backbones([self.backbone_for(name)], self.settings.quick_view, self.settings.quick_pooling)

    def hub_recipe(self, backbone: Backbone) -> bool:
        """Whether the hub's import vectors can stand for `backbone`'s features: the hub embeds with the default
        bundle (this worker's `backbone` with its own preprocessing), so only that exact recipe qualifies; the
        probe images in `embed_samples` then check the vectors themselves."""
        return backbone.cache_key == self.backbone.cache_key

    def seed(self) -> str:
        return load_or_create_key(self.settings.key_path)

    # ------------------------------------------------------------------ loop

    def run(self, max_jobs: int | None = None) -> int:
        """Poll for jobs until stopped (or `max_jobs` were handled); returns how many jobs were handled."""
        handled = 0
        _ = self.quick_backbone  # a missing weights package is a start-up error, not every job's failure
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
                    if mode == COMPARE_MODE:
                        comparison = self._compare(job_id, reporter)
                        reporter.update("upload", 0.99, "sending the comparison")
                        self.client.upload_comparison(job_id, self.settings.worker, comparison)
                        log.info("job %s done (compare): %d rows", job_id, len(comparison.rows))
                        return "succeeded"
                    if mode not in MODES:
                        known = ", ".join((*MODES, COMPARE_MODE))
                        raise DatasetError(f"mode: {mode!r} is not supported by this trainer ({known})")
                    outcome = self._train(job_id, mode, _job_params(job.params), reporter, work / "bundle")
                    reporter.update("upload", 0.99, "uploading the bundle")
                    model = self.client.upload_result(job_id, pack_bundle(outcome.bundle_dir))
                    log.info("job %s done (%s): model %s, accuracy %s", job_id, mode, model.version, outcome.accuracy)
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
        backbone = self.backbone_for(params.backbone) if full is not None else self.quick_backbone_for(params.backbone)
        reuse = full is None and self.settings.hub_embeddings and self.hub_recipe(backbone)
        known = self.images.hub_vectors(job_id) if reuse else None
        # With the hub's vectors a quick job reads only a few images (checks, parity): fetch on demand.
        data, name = self.images.dataset(job_id, reporter, lazy=bool(known))
        target = BundleTarget(out, self.seed(), classifier=name, device=self.device, on_stage=reporter.update)
        if full is not None:
            hooks = _epoch_reports(reporter)
            return train_full_bundle(data, backbone, target, FullBundleOptions(full, hooks, _int8(params, True)))
        quick = QuickOptions(target_flag_rate=self.settings.target_flag_rate)
        return train_quick_bundle(
            data, backbone, target, QuickBundleOptions(quick, self.cache_dir, known, _int8(params, False))
        )

    def _compare(self, job_id: int, reporter: JobReporter) -> ModelComparison:
        """Download the job's dataset and measure `compare_backbones` on it (20 % held out)."""
        data, name = self.images.dataset(job_id, reporter)
        candidates = self.settings.compare_backbones

        def step(i: int, n: int, backbone: str) -> None:
            reporter.update("compare", 0.1 + 0.85 * i / n, f"measuring {backbone} ({i + 1} of {n})")

        return compare_backbones(data, candidates, self.cache_dir, source=name, on_backbone=step)

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


def _token(settings: TrainerSettings) -> str | None:
    return settings.api_token.get_secret_value() if settings.api_token is not None else None


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
