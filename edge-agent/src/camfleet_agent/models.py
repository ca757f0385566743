"""Model manager: pull announced bundles, verify them, swap the active runtime atomically, keep one for rollback.

On disk, per classifier::

    data_dir/models/<classifier>/active.json     {"version": "7", "previous": "6"}  (written atomically)
    data_dir/models/<classifier>/7/               the active bundle
    data_dir/models/<classifier>/6/               the previous one, kept for rollback
    data_dir/models/<classifier>/8.tmp/           a download being checked (removed on any failure)
    data_dir/models/<classifier>/trust.json       {"shop": {"highest": 7, ...}}: the high-water mark per scope

Whatever goes wrong with a new bundle (download, size, sha256, zip, signature, hashes, ONNX), the reason is
logged and the classifier keeps running the model it had. What the agent trusts (docs/SECURITY.md, "Model
bundles and the fleet key"): a bundle signed by the fleet key whose manifest names this site and classifier
(or is the default bundle, as the default classifier only), at a version no lower than the highest applied
unless a hub-signed rollback names it, downloaded from the hub's own origin.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from camfleet_contract.bundle import BundleError, check_scope, read_precision, read_signature, unpack_bundle
from camfleet_contract.messages import ModelAnnouncement
from camfleet_contract.rollback import verify_rollback
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_contract.signing import SignatureError
from camfleet_contract.topics import TopicError, validate_name

from .keys import FleetKeyError, write_atomic

log = logging.getLogger(__name__)

ACTIVE_FILE = "active.json"
TRUST_FILE = "trust.json"
TMP_SUFFIX = ".tmp"
DOWNLOAD_ATTEMPTS = 3
RETRY_BASE_S = 5.0
RETRY_MAX_S = 300.0


class ModelUpdateError(Exception):
    """A bundle that must not be used (bad hash, signature, zip, model…): not retried until a new announcement."""


class TransientUpdateError(Exception):
    """The hub or the network failed: the same announcement is retried later with backoff."""


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
    ) -> None:
        self.models_dir = Path(data_dir) / "models"
        self.site = validate_name(site, "site")
        self.hub_url = hub_url.rstrip("/")
        self._origin = _origin(httpx.URL(self.hub_url))
        self._public_key = public_key
        self.top_k = top_k
        self.use_int8 = use_int8
        self._on_change = on_change
        # The hub token goes only to the hub, never to another host an announcement might name.
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = http or httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0), follow_redirects=False)
        self._owns_http = http is None
        self.retry_base_s = retry_base_s
        self.download_backoff_s = download_backoff_s
        self._lock = threading.Lock()
        self._active: dict[str, ClassifierRuntime] = {}
        self._latest: dict[str, ModelAnnouncement | None] = {}
        self._queue: queue.Queue[tuple[str, ModelAnnouncement | None]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
            state = self._read_state(clf_dir)
            candidates = [v for v in (state.get("version"), state.get("previous")) if isinstance(v, str) and v]
            for version in candidates:
                try:
                    runtime = self._load(clf_dir / version, clf_dir.name, version)
                    self._check_scope(runtime, clf_dir.name)
                except (ModelUpdateError, TransientUpdateError) as exc:
                    log.error("model %s/%s on disk cannot be used: %s", clf_dir.name, version, exc)
                    continue
                with self._lock:
                    self._active[clf_dir.name] = runtime
                if version != state.get("version"):
                    self._write_state(clf_dir, version, None)
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
        if self._owns_http:
            self._http.close()

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
        clf_dir = self.models_dir / classifier
        final = clf_dir / version
        if final.is_dir():  # a rollback to the version we kept: re-verify it instead of downloading again
            try:
                runtime = self._load(final, classifier, version)
            except ModelUpdateError as exc:
                log.warning("model %s/%s on disk is unusable (%s); downloading it again", classifier, version, exc)
                shutil.rmtree(final, ignore_errors=True)
            else:
                trust = self._admit(classifier, runtime, announcement)
                self._swap(classifier, runtime)
                self._write_trust(clf_dir, trust)
                return True
        data = self._download(announcement)
        tmp = clf_dir / f"{version}{TMP_SUFFIX}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            try:
                unpack_bundle(data, tmp)
            except BundleError as exc:
                raise ModelUpdateError(str(exc)) from None
            runtime = self._load(tmp, classifier, version)
            trust = self._admit(classifier, runtime, announcement)
            self._check_signature(tmp, announcement)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        runtime.bundle_dir = final
        self._swap(classifier, runtime)
        self._write_trust(clf_dir, trust)
        return True

    # ------------------------------------------------------------------ trust

    def _check_scope(self, runtime: ClassifierRuntime, classifier: str) -> None:
        try:
            check_scope(runtime.manifest, self.site, classifier)
        except BundleError as exc:
            raise ModelUpdateError(str(exc)) from None

    def _admit(
        self, classifier: str, runtime: ClassifierRuntime, announcement: ModelAnnouncement
    ) -> dict[str, dict[str, object]]:
        """Scope and version rules on the verified manifest; returns the trust state to persist once swapped.

        A version below the highest applied in this scope is a downgrade (a replayed announcement) unless the
        announcement carries a fleet-signed rollback naming it that withdraws at least that highest version and
        is newer than the last rollback accepted.
        """
        self._check_scope(runtime, classifier)
        manifest = runtime.manifest
        number = _version_number(manifest.version)
        trust = self._read_trust(self.models_dir / classifier)
        scope = trust.get(manifest.site, {})
        highest = _stored_int(scope.get("highest"))
        withdrawn = _stored_int(scope.get("withdrawn_through"))  # a rollback withdrew every version up to this
        if number >= highest and number > withdrawn:
            trust[manifest.site] = {**scope, "highest": number}
            return trust
        statement = announcement.rollback
        if number > withdrawn or statement is not None:
            below = f"version {manifest.version} is below version {highest} already applied to {classifier}"
        else:
            below = f"version {manifest.version} of {classifier} was withdrawn by a signed rollback"
        if statement is None:
            raise ModelUpdateError(f"{below}; refused without a signed rollback naming it")
        if (statement.site, statement.classifier, statement.version) != (manifest.site, classifier, manifest.version):
            raise ModelUpdateError(
                f"{below}; the rollback names site={statement.site!r} classifier={statement.classifier!r} "
                f"version={statement.version!r} instead"
            )
        try:
            verify_rollback(statement, self._public_key())
        except SignatureError as exc:
            raise ModelUpdateError(f"{below}; its rollback statement is not signed by the fleet key: {exc}") from None
        except FleetKeyError as exc:
            raise TransientUpdateError(str(exc)) from None
        replaces = int(statement.replaces)
        if replaces < highest:
            raise ModelUpdateError(f"{below}; the rollback withdraws versions up to {replaces} only (an old one)")
        last = scope.get("rollback_issued_at")
        if isinstance(last, str) and statement.issued_at <= datetime.fromisoformat(last):
            raise ModelUpdateError(f"{below}; the rollback was issued at or before the last one accepted ({last})")
        log.info("model %s: signed rollback to %s (withdraws up to %s)", classifier, manifest.version, replaces)
        trust[manifest.site] = {
            "highest": replaces,
            "withdrawn_through": replaces,
            "rollback_issued_at": statement.issued_at.isoformat(),
        }
        return trust

    def deactivate(self, classifier: str) -> None:
        """The hub withdrew this classifier: stop classifying with it (its files stay for a rollback)."""
        with self._lock:
            runtime = self._active.pop(classifier, None)
        (self.models_dir / classifier / ACTIVE_FILE).unlink(missing_ok=True)
        if runtime is not None:
            log.info("model %s/%s deactivated", classifier, runtime.version)
            self._changed()

    def bundle_url(self, announced: str) -> str:
        """The announced URL resolved against hub_url; refused unless it is on the hub's origin."""
        if announced.startswith("/") and not announced.startswith("//"):
            url = self.hub_url + announced  # keeps a path prefix of hub_url (a hub behind a proxy path)
        elif "://" in announced or announced.startswith("//"):
            url = announced
        else:
            url = f"{self.hub_url}/{announced}"
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise ModelUpdateError(f"url={announced!r} is not a valid URL ({exc})") from None
        if parsed.scheme not in ("http", "https") or _origin(parsed) != self._origin:
            # Bundles come from the configured hub only: an announcement cannot send the agent elsewhere.
            raise ModelUpdateError(f"url={announced!r} is not on the hub's origin {self.hub_url}")
        return str(parsed)

    def _download(self, announcement: ModelAnnouncement) -> bytes:
        url = self.bundle_url(announcement.url)
        last: Exception | None = None
        for attempt in range(DOWNLOAD_ATTEMPTS):
            if attempt:
                if self._stop.wait(self.download_backoff_s * attempt):
                    break
            try:
                return self._fetch(url, announcement)
            except TransientUpdateError as exc:
                last = exc
                log.info("model download %s failed (attempt %d): %s", url, attempt + 1, exc)
        raise TransientUpdateError(str(last) if last else "stopped")

    def _fetch(self, url: str, announcement: ModelAnnouncement) -> bytes:
        limit = announcement.size
        digest = hashlib.sha256()
        buf = bytearray()
        try:
            with self._http.stream("GET", url, headers=self._auth) as resp:  # bundle_url: always the hub
                if resp.status_code in (408, 429) or resp.status_code >= 500:
                    raise TransientUpdateError(f"GET {url} answered {resp.status_code}")
                if resp.status_code in (401, 403):
                    raise ModelUpdateError(
                        f"GET {url} answered {resp.status_code}: api_token must be a valid viewer token of this site"
                    )
                if resp.status_code != 200:
                    raise ModelUpdateError(f"GET {url} answered {resp.status_code}")
                declared = resp.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise ModelUpdateError(f"bundle is {declared} bytes, more than the announced size={limit}")
                for chunk in resp.iter_bytes():
                    buf += chunk
                    digest.update(chunk)
                    if len(buf) > limit:
                        raise ModelUpdateError(f"bundle is larger than the announced size={limit}")
        except httpx.HTTPError as exc:
            raise TransientUpdateError(f"GET {url} failed: {type(exc).__name__}: {exc}") from None
        if len(buf) != limit:
            raise ModelUpdateError(f"bundle is {len(buf)} bytes, not the announced size={limit}")
        if digest.hexdigest() != announcement.sha256:
            raise ModelUpdateError(f"bundle sha256 {digest.hexdigest()} != announced sha256={announcement.sha256}")
        return bytes(buf)

    def _load(self, bundle_dir: Path, classifier: str, version: str) -> ClassifierRuntime:
        """Verify against the fleet key and load into ONNX Runtime: a broken bundle fails here."""
        try:
            key = self._public_key()
        except FleetKeyError as exc:
            raise TransientUpdateError(str(exc)) from None
        try:
            # The hub signs each bundle's precision so hub and agents answer alike; use_int8 is for older bundles.
            signed = read_precision(bundle_dir)
            prefer_int8 = self.use_int8 if signed is None else signed == "int8"
            runtime = ClassifierRuntime(bundle_dir, public_key=key, top_k=self.top_k, prefer_int8=prefer_int8)
        except BundleError as exc:
            raise ModelUpdateError(str(exc)) from None
        except Exception as exc:  # ORT/usearch failures that the runtime did not wrap
            raise ModelUpdateError(f"bundle cannot be loaded: {type(exc).__name__}: {exc}") from None
        if runtime.version != version:
            raise ModelUpdateError(f"manifest version {runtime.version!r} != announced version={version!r}")
        log.info("model %s/%s runs %s", classifier, version, runtime.model_file)
        return runtime

    @staticmethod
    def _check_signature(bundle_dir: Path, announcement: ModelAnnouncement) -> None:
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

    def _swap(self, classifier: str, runtime: ClassifierRuntime) -> None:
        with self._lock:
            old = self._active.get(classifier)
            self._active[classifier] = runtime
        clf_dir = self.models_dir / classifier
        state = self._read_state(clf_dir)
        candidate = old.version if old is not None else state.get("version")
        if candidate == runtime.version:
            candidate = state.get("previous")
        previous = candidate if isinstance(candidate, str) else None
        self._write_state(clf_dir, runtime.version, previous)
        self._prune(clf_dir, keep={runtime.version, previous})
        log.info("model %s: now %s (was %s)", classifier, runtime.version, old.version if old else "none")
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:
                log.exception("model change callback failed")

    # ------------------------------------------------------------------ state on disk

    @staticmethod
    def _read_state(clf_dir: Path) -> dict[str, object]:
        path = clf_dir / ACTIVE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("%s is unreadable (%s); ignoring it", path, exc)
            return {}
        return state if isinstance(state, dict) else {}

    @staticmethod
    def _read_trust(clf_dir: Path) -> dict[str, dict[str, object]]:
        path = clf_dir / TRUST_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Losing the high-water mark would let a replay downgrade: refuse updates until someone looks.
            raise ModelUpdateError(f"{path} is unreadable ({exc}); fix or remove it to accept updates") from None
        if not isinstance(state, dict) or not all(isinstance(v, dict) for v in state.values()):
            raise ModelUpdateError(f"{path} is not a trust state; fix or remove it to accept updates")
        return state

    @staticmethod
    def _write_trust(clf_dir: Path, trust: dict[str, dict[str, object]]) -> None:
        write_atomic(clf_dir / TRUST_FILE, json.dumps(trust, indent=2, sort_keys=True).encode())

    @staticmethod
    def _write_state(clf_dir: Path, version: str, previous: str | None) -> None:
        state = {"version": version, "previous": previous, "activated_at": datetime.now(UTC).isoformat()}
        write_atomic(clf_dir / ACTIVE_FILE, json.dumps(state, indent=2).encode())

    @staticmethod
    def _prune(clf_dir: Path, keep: set[str | None]) -> None:
        """Delete versions other than the active and previous ones, and stray temp dirs."""
        for path in clf_dir.iterdir():
            if path.is_dir() and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
                log.info("model %s: removed old version %s", clf_dir.name, path.name)


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    """scheme, host, port (the default one when the URL names none): what 'the hub's origin' means."""
    port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
    return url.scheme, url.host.lower(), port


def _version_number(version: str) -> int:
    """Hub versions are whole numbers; a version the agent cannot order is one it cannot protect, so refused."""
    if not version.isascii() or not version.isdigit() or len(version) > 18:
        raise ModelUpdateError(f"version={version!r} is not a whole number, so it cannot be ordered")
    return int(version)


def _stored_int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
