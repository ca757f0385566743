"""The agent's status: what goes into the retained status message and /readyz, and the thread that sends it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from camfleet_contract.messages import AgentStatus, SwapBehaviour

from . import __version__
from .config import AgentSettings, CameraSettings
from .health import CameraHealth, HealthSnapshot
from .pipeline import CameraPipeline

log = logging.getLogger(__name__)


def agent_status(
    settings: AgentSettings,
    h: HealthSnapshot,
    cameras: list[str],
    first_frames: dict[str, SwapBehaviour],
    state: str = "online",
) -> AgentStatus:
    """The status message of one health snapshot; frame drops are summed per reason over the cameras."""
    dropped = dict(h.outbox_dropped)
    for cam in h.cameras:
        for reason, n in cam.dropped.items():
            if n:
                dropped[f"frame_{reason}"] = dropped.get(f"frame_{reason}", 0) + n
    return AgentStatus(
        state="online" if state == "online" else "offline",
        agent=settings.agent,
        site=settings.site,
        software_version=__version__,
        models=h.models,
        cameras=sorted(cameras),
        fps={cam.name: round(cam.classify_fps, 3) for cam in h.cameras},
        gate_ratio={cam.name: round(cam.gate_ratio, 3) for cam in h.cameras},
        outbox_depth=h.outbox_depth,
        outbox_bytes=h.outbox_bytes,
        dropped=dropped,
        reconnects=h.reconnects,
        config_version=h.config_version,
        problems=h.problems,
        first_frames=first_frames,
    )


def problems(
    cameras: list[CameraHealth],
    camera_errors: dict[str, str],
    configured: dict[str, CameraSettings],
    models: dict[str, str],
    settings_error: str | None,
    clock_skew_s: float,
    clock_skew_warn_s: float,
) -> list[str]:
    """What an operator should look at, one line each (cut to 500 characters)."""
    out = [f"camera {c.name}: {c.error}" for c in cameras if c.error is not None]
    out += [f"camera {name}: {error}" for name, error in sorted(camera_errors.items())]
    for cam in sorted(configured.values(), key=lambda c: c.name):
        out += [
            f"camera {cam.name}: classifier {b.classifier!r} is unknown (no model announced for it)"
            for b in cam.classifiers
            if b.classifier not in models
        ]
    if settings_error is not None:
        out.append(f"settings refused: {settings_error}")
    if abs(clock_skew_s) > clock_skew_warn_s:
        out.append(
            f"clock skew: our clock differs from the hub's by {clock_skew_s:+.0f} s (or a command waited that long)"
        )
    return [p[:500] for p in out]


def camera_health(p: CameraPipeline) -> CameraHealth:
    """A camera's figures, from its stats when the pipeline keeps them."""
    stats = getattr(p, "stats", None)
    if stats is not None:
        snap = stats.snapshot()
        return CameraHealth(
            name=p.name,
            capture_fps=snap.capture_fps,
            classify_fps=snap.classify_fps,
            gate_ratio=snap.gate_ratio,
            dropped=dict(snap.dropped),
            connected=snap.connected,
            error=p.error or snap.last_error,
        )
    return CameraHealth(
        name=p.name,
        capture_fps=p.fps,
        classify_fps=p.fps,
        gate_ratio=1.0,
        dropped={"queue_full": p.queue.dropped},
        connected=p.error is None,
        error=p.error,
    )


class StatusLoop:
    """Publishes the retained status every `interval_s`, and at once after `changed()` (a model swap…)."""

    def __init__(self, interval_s: float, publish: Callable[[], None]) -> None:
        self.interval_s = interval_s
        self._publish = publish
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def changed(self) -> None:
        """Send the status now; safe from any thread."""
        self._changed.set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(self.interval_s)
            self._changed.clear()
            if self._stop.is_set():
                return
            try:
                self._publish()
            except Exception:
                log.exception("publishing the status failed")
