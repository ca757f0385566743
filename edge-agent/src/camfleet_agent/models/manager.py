"""The model manager: a worker thread that applies announcements and swaps the active runtime atomically."""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from camfleet_contract.bundle import BundleError, unpack_bundle
from camfleet_contract.messages import ModelAnnouncement
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_contract.topics import TopicError, validate_name

from . import store
from .download import BundleDownloader
from .errors import ModelUpdateError, TransientUpdateError
from .loading import check_signature, load_runtime
from .trust import admit, check_bundle_scope

log = logging.getLogger(__name__)

RETRY_BASE_S = 5.0
RETRY_MAX_S = 300.0


@dataclass
class _Retry:
    announcement: ModelAnnouncement
    attempt: int
    due: float


class ModelManager:
    """Owns the active `ClassifierRuntime` per classifier; updates run on its own worker thread."""

    def __init__(
        self,
        data_dir: Path,
        hub_url: str,
        public_key: Callable[[], str],
        *,
        site: str,
        top_k: int = 5,
        on_change: Callable[[], None] | None = None,
        http: httpx.Client | None = None,
        retry_base_s: float = RETRY_BASE_S,
        download_backoff_s: float = 1.0,
        use_int8: bool = True,
        token: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.models_dir = Path(data_dir) / "models"
        self.site = validate_name(site, "site")
        self._public_key = public_key
        self.top_k = top_k
        self.use_int8 = use_int8
        self.threads = threads  # ONNX Runtime threads per run (None: the runtime's default)
        self._on_change = on_change
        self.retry_base_s = retry_base_s
        self._lock = threading.Lock()
        self._active: dict[str, ClassifierRuntime] = {}
        self._latest: dict[str, ModelAnnouncement | None] = {}
        self._queue: queue.Queue[tuple[str, ModelAnnouncement | None]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.downloader = BundleDownloader(
            hub_url, stop=self._stop, http=http, backoff_s=download_backoff_s, token=token
        )

    # ------------------------------------------------------------------ reading

    def active(self) -> dict[str, ClassifierRuntime]:
        """A snapshot of the active runtimes; a swap never changes a snapshot already taken."""
        with self._lock:
            return dict(self._active)

    def versions(self) -> dict[str, str]:
        with self._lock:
            return {name: rt.version for name, rt in self._active.items()}

    # ------------------------------------------------------------------ lifecycle

    def load_from_disk(self) -> None:
        """Activate each classifier's last active version, so an agent restarted offline still classifies."""
        if not self.models_dir.is_dir():
            return
        for clf_dir in sorted(p for p in self.models_dir.iterdir() if p.is_dir()):
            state = store.read_state(clf_dir)
            candidates = [v for v in (state.get("version"), state.get("previous")) if isinstance(v, str) and v]
            for version in candidates:
                try:
                    runtime = self._load(clf_dir / version, clf_dir.name, version)
                    check_bundle_scope(runtime.manifest, self.site, clf_dir.name)
                except (ModelUpdateError, TransientUpdateError) as exc:
                    log.error("model %s/%s on disk cannot be used: %s", clf_dir.name, version, exc)
                    continue
                with self._lock:
                    self._active[clf_dir.name] = runtime
                if version != state.get("version"):
                    store.write_state(clf_dir, version, None)
                log.info("model %s/%s loaded from disk", clf_dir.name, version)
                break

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._worker, name="model-manager", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(("", None))  # wake the worker
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.downloader.close()

    def submit(self, classifier: str, announcement: ModelAnnouncement | None) -> None:
        """Queue an announcement (None = the hub removed the classifier); safe from any thread."""
        self._queue.put((classifier, announcement))

    def reload(self) -> None:
        """Re-apply the latest announcement of every classifier (e.g. after a permanent failure was fixed)."""
        for classifier, announcement in list(self._latest.items()):
            self.submit(classifier, announcement)

    def _worker(self) -> None:
        retries: dict[str, _Retry] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            wait = min([r.due - now for r in retries.values()] + [1.0])
            try:
                classifier, announcement = self._queue.get(timeout=max(0.0, wait))
            except queue.Empty:
                pass
            else:
                if self._stop.is_set():
                    return
                if not classifier:  # a stale wake-up from an earlier stop()
                    continue
                retries.pop(classifier, None)
                self._latest[classifier] = announcement
                self._attempt(classifier, announcement, 0, retries)
            now = time.monotonic()
            for classifier, retry in list(retries.items()):
                if retry.due <= now and not self._stop.is_set():
                    del retries[classifier]
                    self._attempt(classifier, retry.announcement, retry.attempt, retries)

    def _attempt(
        self, classifier: str, announcement: ModelAnnouncement | None, attempt: int, retries: dict[str, _Retry]
    ) -> None:
        try:
            self.apply(classifier, announcement)
        except TransientUpdateError as exc:
            assert announcement is not None
            delay = min(self.retry_base_s * 2**attempt, RETRY_MAX_S)
            retries[classifier] = _Retry(announcement, attempt + 1, time.monotonic() + delay)
            log.warning(
                "model %s/%s not updated (%s); retrying in %.0f s", classifier, announcement.version, exc, delay
            )
        except Exception as exc:  # ModelUpdateError, or a bug: either way keep the old model
            version = announcement.version if announcement else "-"
            log.error("model %s/%s rejected, keeping the current model: %s", classifier, version, exc)

    # ------------------------------------------------------------------ updating

    def apply(self, classifier: str, announcement: ModelAnnouncement | None) -> bool:
        """Make the announced version active; True when it swapped. Raises on failure, keeping the old model."""
        if announcement is None:
            self.deactivate(classifier)
            return False
        version = announcement.version
        try:
            validate_name(classifier, "classifier")
            validate_name(version, "version")
        except TopicError as exc:
            raise ModelUpdateError(str(exc)) from None
        current = self.active().get(classifier)
        if current is not None and current.version == version:
            log.debug("model %s/%s already active", classifier, version)
            return False
        if self._apply_kept(classifier, announcement):
            return True
        self._install(classifier, announcement)
        return True

    def _apply_kept(self, classifier: str, announcement: ModelAnnouncement) -> bool:
        """A rollback to the version kept on disk: re-verify it instead of downloading it again."""
        clf_dir = self.models_dir / classifier
        final = clf_dir / announcement.version
        if not final.is_dir():
            return False
        try:
            runtime = self._load(final, classifier, announcement.version)
        except ModelUpdateError as exc:
            log.warning(
                "model %s/%s on disk is unusable (%s); downloading it again", classifier, announcement.version, exc
            )
            shutil.rmtree(final, ignore_errors=True)
            return False
        trust = self._admit(classifier, runtime, announcement)
        self._swap(classifier, runtime)
        store.write_trust(clf_dir, trust)
        return True

    def _install(self, classifier: str, announcement: ModelAnnouncement) -> None:
        """Download, unpack into a temp dir, verify and admit, then rename into place and swap."""
        data = self.downloader.download(announcement)
        clf_dir = self.models_dir / classifier
        final = clf_dir / announcement.version
        tmp = clf_dir / f"{announcement.version}{store.TMP_SUFFIX}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            try:
                unpack_bundle(data, tmp)
            except BundleError as exc:
                raise ModelUpdateError(str(exc)) from None
            runtime = self._load(tmp, classifier, announcement.version)
            trust = self._admit(classifier, runtime, announcement)
            check_signature(tmp, announcement)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        runtime.bundle_dir = final
        self._swap(classifier, runtime)
        store.write_trust(clf_dir, trust)

    def _admit(self, classifier: str, runtime: ClassifierRuntime, announcement: ModelAnnouncement) -> store.Trust:
        """Scope and version rules (`trust.admit`); returns the trust state to persist once swapped."""
        check_bundle_scope(runtime.manifest, self.site, classifier)
        trust = store.read_trust(self.models_dir / classifier)
        return admit(runtime.manifest, classifier, announcement, trust, self._public_key)

    def _load(self, bundle_dir: Path, classifier: str, version: str) -> ClassifierRuntime:
        return load_runtime(
            bundle_dir,
            classifier,
            version,
            self._public_key,
            top_k=self.top_k,
            use_int8=self.use_int8,
            threads=self.threads,
        )

    def deactivate(self, classifier: str) -> None:
        """The hub withdrew this classifier: stop classifying with it (its files stay for a rollback)."""
        with self._lock:
            runtime = self._active.pop(classifier, None)
        store.clear_state(self.models_dir / classifier)
        if runtime is not None:
            log.info("model %s/%s deactivated", classifier, runtime.version)
            self._changed()

    def _swap(self, classifier: str, runtime: ClassifierRuntime) -> None:
        with self._lock:
            old = self._active.get(classifier)
            self._active[classifier] = runtime
        clf_dir = self.models_dir / classifier
        state = store.read_state(clf_dir)
        candidate = old.version if old is not None else state.get("version")
        if candidate == runtime.version:
            candidate = state.get("previous")
        previous = candidate if isinstance(candidate, str) else None
        store.write_state(clf_dir, runtime.version, previous)
        store.prune(clf_dir, keep={runtime.version, previous})
        log.info("model %s: now %s (was %s)", classifier, runtime.version, old.version if old else "none")
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:
                log.exception("model change callback failed")
