"""The Agent builder: creates every part, starts them in order, stops them in reverse order."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from camfleet_contract.messages import AgentStatus, Command, to_json
from camfleet_contract.topics import Topics

from . import __version__
from .capture import FrameSource, open_source
from .config import AgentSettings
from .keys import FleetKey
from .models import ModelManager
from .mqtt import AgentMqtt
from .pipeline import CameraPipeline, Identity

log = logging.getLogger(__name__)


def _stopper(pipeline: CameraPipeline) -> Callable[[bool], None]:
    """A stop callback bound to one pipeline (clean or not, a camera stops the same way)."""
    return lambda _clean: pipeline.stop()


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
        self.pipelines: dict[str, CameraPipeline] = {}
        self._status_changed = threading.Event()
        self._status_stop = threading.Event()
        self._status_thread: threading.Thread | None = None
        self._stack: list[tuple[str, Callable[[bool], None]]] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start every part; a bad camera source fails here, before anything connects."""
        s = self.settings
        sources: dict[str, FrameSource] = {cam.name: open_source(cam.source, cam.fps, cam.loop) for cam in s.cameras}
        try:
            s.data_dir.mkdir(parents=True, exist_ok=True)
            self.fleet_key.check_hub()

            models = ModelManager(
                s.data_dir,
                s.hub_url,
                self.fleet_key.get,
                site=s.site,
                top_k=s.top_k,
                on_change=self._status_changed.set,
                use_int8=s.use_int8,
                token=self._token,
            )
            models.load_from_disk()
            models.start()
            self.models = models
            self._stack.append(("models", lambda _clean: models.stop()))

            mqtt = AgentMqtt(
                s.mqtt,
                s.site,
                s.agent,
                status_payload=self.status_payload,
                on_model=models.submit,
                on_command=self.handle_command,
            )
            mqtt.start()
            self.mqtt = mqtt
            self._stack.append(("mqtt", self._stop_mqtt))

            for cam in s.cameras:
                pipeline = CameraPipeline(
                    cam, sources.pop(cam.name), models.active, mqtt, self.identity, queue_size=s.queue_size
                )
                pipeline.start()
                self.pipelines[cam.name] = pipeline
                self._stack.append((f"camera {cam.name}", _stopper(pipeline)))

            self._status_stop.clear()
            self._status_thread = threading.Thread(target=self._status_loop, name="status", daemon=True)
            self._status_thread.start()
            self._stack.append(("status", lambda _clean: self._stop_status()))
        except BaseException:
            for source in sources.values():
                source.close()
            self.stop()
            raise
        log.info(
            "agent %s/%s started: %d camera(s), models %s", s.site, s.agent, len(self.pipelines), self.model_versions()
        )

    def stop(self, clean: bool = True) -> None:
        """Stop in reverse order; `clean=False` drops the MQTT connection like a crash (the will fires)."""
        while self._stack:
            name, stop = self._stack.pop()
            try:
                stop(clean)
            except Exception:
                log.exception("stopping %s failed", name)
        self.pipelines.clear()

    def _stop_mqtt(self, clean: bool) -> None:
        if self.mqtt is None:
            return
        if clean:
            self.mqtt.stop(offline_payload=to_json(self.status("offline")))
        else:
            self.mqtt.abort()

    def _stop_status(self) -> None:
        self._status_stop.set()
        self._status_changed.set()
        if self._status_thread is not None:
            self._status_thread.join(timeout=10)
            self._status_thread = None

    # ------------------------------------------------------------------ status

    def model_versions(self) -> dict[str, str]:
        return self.models.versions() if self.models is not None else {}

    def status(self, state: str = "online") -> AgentStatus:
        return AgentStatus(
            state="online" if state == "online" else "offline",
            agent=self.settings.agent,
            site=self.settings.site,
            software_version=__version__,
            models=self.model_versions(),
            cameras=[cam.name for cam in self.settings.cameras],
            fps={name: round(p.fps, 3) for name, p in self.pipelines.items()},
            outbox_depth=0,
        )

    def status_payload(self) -> bytes:
        return to_json(self.status("online"))

    def publish_status(self) -> None:
        if self.mqtt is not None and self.mqtt.connected.is_set():
            self.mqtt.publish(self.mqtt.status_topic, self.status_payload(), qos=1, retain=True)

    def _status_loop(self) -> None:
        """Retained status every `status_interval_s`, and at once when the models change."""
        while not self._status_stop.is_set():
            self._status_changed.wait(self.settings.status_interval_s)
            self._status_changed.clear()
            if self._status_stop.is_set():
                return
            try:
                self.publish_status()
            except Exception:
                log.exception("publishing the status failed")

    # ------------------------------------------------------------------ commands

    def handle_command(self, command: Command) -> None:
        """Commands from the hub (called on the MQTT thread: only quick work here)."""
        if command.command == "snapshot":
            targets = (
                list(self.pipelines.values())
                if command.camera is None
                else [p for name, p in self.pipelines.items() if name == command.camera]
            )
            if not targets:
                log.warning("snapshot command for unknown camera %r ignored", command.camera)
            for pipeline in targets:
                pipeline.request_snapshot()
        elif command.command == "reload":
            if self.models is not None:
                self.models.reload()
        else:
            log.warning("command %r is not supported by this agent version; ignored", command.command)
