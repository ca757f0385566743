"""The Agent builder: creates every part, starts them in order, stops them in reverse order."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import cv2

from camfleet_contract.agent_config import MAX_AGENT_CAMERAS, AgentConfig
from camfleet_contract.messages import AgentStatus, CommandReply, to_json
from camfleet_contract.topics import Topics

from .capture import FrameSource, open_source
from .commands import CommandFailed, CommandRunner
from .config import AgentSettings, CameraSettings
from .events import Identity
from .health import AgentMetrics, HealthServer, HealthSnapshot
from .inference_pool import InferencePool
from .keys import FleetKey
from .models.manager import ModelManager
from .mqtt import AgentMqtt
from .outbox import Outbox
from .pipeline import CameraPipeline
from .remote_config import RemoteConfig
from .status_report import StatusLoop, agent_status, camera_health, problems
from .swap_watch import SwapWatch
from .uploads import UploadPolicy, camera_rules

log = logging.getLogger(__name__)

# OpenCV's own thread pool for resize/colour conversion: single-threaded, the work per frame is ~1 ms and
# pool threads only compete with ONNX Runtime's, which already take every core (preprocess CPU 1.4 → 0.9 ms).
OPENCV_THREADS = 1


def _open_camera(cam: CameraSettings) -> FrameSource:
    return open_source(cam.source, cam.fps, cam.loop, stall_timeout_s=cam.stall_timeout_s)


class Agent:
    """One agent process: fleet key → models → MQTT → camera pipelines → status reporter.

    >>> agent = Agent(load_settings(Path("agent.toml")))
    >>> agent.start()
    >>> ...
    >>> agent.stop()          # publishes the offline status, then disconnects
    """

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.topics = Topics(settings.mqtt.root)
        self.identity = Identity(site=settings.site, agent=settings.agent, topics=self.topics)
        self._token = settings.api_token.get_secret_value() if settings.api_token else None
        self.fleet_key = FleetKey(
            settings.fleet_public_key,
            settings.data_dir,
            settings.hub_url,
            timeout_s=5.0,
            token=self._token,
            fingerprint_sha256=settings.models.fleet_key_sha256,
            trust_on_first_use_http=settings.models.trust_on_first_use_http,
        )
        self.models: ModelManager | None = None
        self.mqtt: AgentMqtt | None = None
        self.outbox: Outbox | None = None
        self.health: HealthServer | None = None
        self.commands = CommandRunner(settings.agent, self, self._send_reply)
        self.remote = RemoteConfig(settings.data_dir, settings.site, settings.agent, self.fleet_key.get, self._apply)
        self.cameras: dict[str, CameraSettings] = {cam.name: cam for cam in settings.cameras}
        self.pipelines: dict[str, CameraPipeline] = {}
        self.pool: InferencePool | None = None  # inference workers shared by every camera
        self._cameras_lock = threading.RLock()  # restart and settings change cameras from the command thread
        self._camera_errors: dict[str, str] = {}  # cameras that could not be (re)opened
        self.metrics = AgentMetrics(self.health_snapshot)
        self.status_loop = StatusLoop(settings.status_interval_s, self.publish_status)
        self.swap_watch = SwapWatch(settings.swap_watch, on_complete=self.status_loop.changed)
        self._stack: list[tuple[str, Callable[[bool], None]]] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start every part; a bad camera source fails here, before anything connects."""
        s = self.settings
        cv2.setNumThreads(OPENCV_THREADS)
        sources: dict[str, FrameSource] = {cam.name: _open_camera(cam) for cam in s.cameras}
        try:
            s.data_dir.mkdir(parents=True, exist_ok=True)
            self.fleet_key.check_hub()
            self.remote.load()  # the hub's settings of an earlier run (verified again): before the cameras start
            outbox = self._start_outbox()
            self._start_health()
            self.commands.start()
            self._stack.append(("commands", lambda _clean: self.commands.stop()))
            models = self._start_models()
            self._start_mqtt(models, outbox)
            pool = InferencePool(s.inference_threads()[0])
            pool.start()
            self.pool = pool
            self._stack.append(("inference", lambda _clean: pool.stop()))
            self._start_cameras(sources)
            self.status_loop.start()
            self._stack.append(("status", lambda _clean: self.status_loop.stop()))
        except BaseException:
            for source in list(sources.values()):
                source.close()
            self.stop()
            raise
        log.info(
            "agent %s/%s started: %d camera(s), models %s", s.site, s.agent, len(self.pipelines), self.model_versions()
        )

    def _start_outbox(self) -> Outbox:
        outbox = Outbox(self.settings.data_dir / "outbox.sqlite", self.settings.delivery.outbox_max_bytes)
        self.outbox = outbox
        self._stack.append(("outbox", lambda _clean: outbox.close()))
        return outbox

    def _start_health(self) -> None:
        cfg = self.settings.health
        if not cfg.enabled:
            return
        try:
            health = HealthServer(self.metrics, cfg.host, cfg.port)
        except OSError as exc:  # a taken port must not keep the cameras from running
            log.error("health: cannot listen on %s:%d: %s", cfg.host, cfg.port, exc)
            return
        health.start()
        self.health = health
        self._stack.append(("health", lambda _clean: health.stop()))

    def _start_models(self) -> ModelManager:
        s = self.settings
        models = ModelManager(
            s.data_dir,
            s.hub_url,
            self.fleet_key.get,
            site=s.site,
            top_k=s.top_k,
            on_change=self.status_loop.changed,
            use_int8=s.use_int8,
            token=self._token,
            threads=s.inference_threads()[1],
        )
        models.load_from_disk()
        models.start()
        self.models = models
        self._stack.append(("models", lambda _clean: models.stop()))
        return models

    def _start_mqtt(self, models: ModelManager, outbox: Outbox) -> None:
        s = self.settings
        mqtt = AgentMqtt(
            s.mqtt,
            s.site,
            s.agent,
            status_payload=self.status_payload,
            on_model=models.submit,
            on_command=self.commands.submit,
            outbox=outbox,
            on_config=self._on_config_message,
        )
        mqtt.start()
        self.mqtt = mqtt
        self._stack.append(("mqtt", self._stop_mqtt))

    def _start_cameras(self, sources: dict[str, FrameSource]) -> None:
        """Every camera; one configured locally as it runs uses the source opened at start (the hub may differ)."""
        for name, cam in list(self.cameras.items()):
            source = sources.pop(name, None)
            if source is not None and cam != _local(self.settings, name):
                source.close()
                source = None
            self._start_camera_reporting(cam, source)
        self._stack.append(("cameras", lambda _clean: self._stop_cameras()))

    def stop(self, clean: bool = True) -> None:
        """Stop in reverse order; `clean=False` drops the MQTT connection like a crash (the will fires)."""
        while self._stack:
            name, stop = self._stack.pop()
            try:
                stop(clean)
            except Exception:
                log.exception("stopping %s failed", name)
        self.pipelines.clear()

    def _start_camera(self, cam: CameraSettings, source: FrameSource | None = None) -> CameraPipeline:
        assert self.models is not None and self.mqtt is not None
        with self._cameras_lock:
            pipeline = CameraPipeline(
                cam,
                source if source is not None else _open_camera(cam),
                self.models.active,
                self.mqtt,
                self.identity,
                queue_size=self.settings.queue_size,
            )
            pipeline.on_latency = self.metrics.observe_latency
            pipeline.on_classified = self.swap_watch.observe
            pipeline.start(self.pool)
            self.pipelines[cam.name] = pipeline
            return pipeline

    def _start_camera_reporting(self, cam: CameraSettings, source: FrameSource | None = None) -> None:
        """Start a camera; a source that cannot be opened is logged and shown in the status, never fatal."""
        try:
            self._start_camera(cam, source)
        except Exception as exc:
            self._camera_errors[cam.name] = f"could not open its source: {exc}"
            log.error("camera %s: %s", cam.name, self._camera_errors[cam.name])
        else:
            self._camera_errors.pop(cam.name, None)

    def _stop_cameras(self) -> None:
        with self._cameras_lock:
            for pipeline in reversed(list(self.pipelines.values())):
                pipeline.stop()
            self.pipelines.clear()

    def _stop_mqtt(self, clean: bool) -> None:
        if self.mqtt is None:
            return
        if clean:
            self.mqtt.stop(offline_payload=to_json(self.status("offline")))
        else:
            self.mqtt.abort()

    # ------------------------------------------------------------------ status

    def model_versions(self) -> dict[str, str]:
        return self.models.versions() if self.models is not None else {}

    def status(self, state: str = "online") -> AgentStatus:
        return agent_status(self.settings, self.health_snapshot(), list(self.cameras), self.swap_watch.report(), state)

    def health_snapshot(self) -> HealthSnapshot:
        """One consistent read of everything status, /readyz and /metrics report."""
        with self._cameras_lock:
            pipelines = list(self.pipelines.values())
        cameras = [camera_health(p) for p in pipelines]
        box = self.outbox.stats() if self.outbox is not None else None
        models = self.model_versions()
        return HealthSnapshot(
            cameras=cameras,
            mqtt_connected=self.mqtt is not None and self.mqtt.connected.is_set(),
            reconnects=self.mqtt.reconnects if self.mqtt is not None else 0,
            outbox_depth=box.depth if box else 0,
            outbox_bytes=box.bytes if box else 0,
            outbox_dropped=box.dropped if box else {},
            models=models,
            config_version=self.remote.version,
            config_refused=self.remote.refused,
            clock_skew_s=self.commands.clock_skew_s,
            problems=problems(
                cameras,
                self._camera_errors,
                self.cameras,
                models,
                self.remote.last_error,
                self.commands.clock_skew_s,
                self.settings.delivery.clock_skew_warn_s,
            ),
        )

    def status_payload(self) -> bytes:
        return to_json(self.status("online"))

    def publish_status(self) -> None:
        if self.mqtt is not None and self.mqtt.connected.is_set():
            self.mqtt.publish(self.mqtt.status_topic, self.status_payload(), qos=1, retain=True)

    # ------------------------------------------------------------------ commands and settings

    def _send_reply(self, reply: CommandReply) -> None:
        if self.mqtt is not None:
            self.mqtt.publish_direct(self.topics.reply(self.settings.site, self.settings.agent), to_json(reply), qos=1)

    def snapshot(self, camera: str | None) -> str:
        with self._cameras_lock:
            targets = list(self.pipelines.values()) if camera is None else [self._pipeline(camera)]
        for pipeline in targets:
            pipeline.request_snapshot()
        return f"snapshot requested from {', '.join(p.name for p in targets) or 'no camera'}"

    def reload(self) -> str:
        message = self.remote.reload()
        if self.models is not None:
            self.models.reload()
        return f"{message}; models re-checked"

    def restart_camera(self, camera: str) -> str:
        with self._cameras_lock:
            if camera not in self.cameras:
                self._pipeline(camera)  # raises CommandFailed naming the cameras there are
            old = self.pipelines.pop(camera, None)
            if old is not None:
                old.stop()
            try:
                self._start_camera(self.cameras[camera])
            except Exception as exc:
                self.pipelines.pop(camera, None)
                self._camera_errors[camera] = f"could not reopen its source: {exc}"
                log.error("camera %s: %s", camera, self._camera_errors[camera])
                raise CommandFailed(f"camera {camera}: could not reopen its source: {exc}") from None
            self._camera_errors.pop(camera, None)
        return f"camera {camera} restarted"

    def config_version(self) -> int | None:
        return self.remote.version

    def _pipeline(self, camera: str) -> CameraPipeline:
        pipeline = self.pipelines.get(camera)
        if pipeline is None:
            raise CommandFailed(
                f"camera={camera!r} is not a camera of this agent ({', '.join(sorted(self.pipelines))})"
            )
        return pipeline

    def _on_config_message(self, payload: bytes) -> None:
        """From the MQTT thread: verifying and applying may restart cameras, so it runs on the command thread."""
        self.commands.defer(lambda: self._accept_config(payload))

    def _accept_config(self, payload: bytes) -> None:
        if self.remote.submit(payload):
            self.status_loop.changed()

    def _apply(self, config: AgentConfig) -> None:
        """Run the hub's settings: a camera's local-only fields (loop, jpeg quality) stay as configured here."""
        with self._cameras_lock:
            for hub_cam in config.cameras:
                local = self.cameras.get(hub_cam.name)
                if local is None and len(self.cameras) >= MAX_AGENT_CAMERAS:
                    log.warning("hub camera %s not added: %d cameras at most", hub_cam.name, MAX_AGENT_CAMERAS)
                    continue
                merged = CameraSettings(
                    **hub_cam.model_dump(),
                    upload_interval_s=0,  # the hub's upload rules replace the local interval
                    loop=local.loop if local is not None else True,
                    jpeg_quality=local.jpeg_quality if local is not None else 85,
                )
                if local == merged:
                    continue
                self.cameras[hub_cam.name] = merged
                running = self.pipelines.get(hub_cam.name)
                if running is None:
                    if self.mqtt is not None:  # started: a new camera from the hub
                        self._start_camera_reporting(merged)
                    continue
                if local is not None and local.model_dump(
                    exclude={"uploads", "upload_interval_s"}
                ) == merged.model_dump(exclude={"uploads", "upload_interval_s"}):
                    running.uploads = UploadPolicy(camera_rules(merged.uploads, merged.upload_interval_s))
                    continue
                running.stop()
                self.pipelines.pop(hub_cam.name, None)
                self._start_camera_reporting(merged)


def _local(settings: AgentSettings, name: str) -> CameraSettings | None:
    return next((c for c in settings.cameras if c.name == name), None)
