"""Local health and metrics over HTTP: `/healthz` (alive), `/readyz` (doing its job), Prometheus `/metrics`.

Gauges and counters are read from the agent at scrape time (one `HealthSnapshot`), so nothing has to be kept
in step; only the inference latency is a histogram, observed by the pipelines as they classify.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class CameraHealth:
    name: str
    capture_fps: float
    classify_fps: float
    gate_ratio: float  # classified ÷ captured
    dropped: dict[str, int]  # frames dropped by reason
    connected: bool
    error: str | None


@dataclass(frozen=True)
class HealthSnapshot:
    """Everything /readyz and /metrics report, read in one go from the agent."""

    cameras: list[CameraHealth]
    mqtt_connected: bool
    reconnects: int
    outbox_depth: int
    outbox_bytes: int
    outbox_dropped: dict[str, int]
    models: dict[str, str]  # classifier → active version
    config_version: int | None
    config_refused: int
    clock_skew_s: float
    problems: list[str] = field(default_factory=list)


class _AgentCollector(Collector):
    def __init__(self, snapshot: Callable[[], HealthSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self._snapshot()
        fps = GaugeMetricFamily("camfleet_agent_camera_fps", "Frames per second, by stage", labels=["camera", "stage"])
        ratio = GaugeMetricFamily("camfleet_agent_gate_ratio", "Classified ÷ captured frames", labels=["camera"])
        up = GaugeMetricFamily("camfleet_agent_camera_up", "1 while the camera's source is open", labels=["camera"])
        dropped = CounterMetricFamily(
            "camfleet_agent_frames_dropped", "Frames dropped, by reason", labels=["camera", "reason"]
        )
        for cam in s.cameras:
            fps.add_metric([cam.name, "capture"], cam.capture_fps)
            fps.add_metric([cam.name, "classify"], cam.classify_fps)
            ratio.add_metric([cam.name], cam.gate_ratio)
            up.add_metric([cam.name], 1.0 if cam.connected and cam.error is None else 0.0)
            for reason, n in sorted(cam.dropped.items()):
                dropped.add_metric([cam.name, reason], n)
        yield from (fps, ratio, up, dropped)
        yield GaugeMetricFamily("camfleet_agent_outbox_depth", "Messages queued on disk", value=s.outbox_depth)
        yield GaugeMetricFamily("camfleet_agent_outbox_bytes", "Bytes queued on disk", value=s.outbox_bytes)
        out_dropped = CounterMetricFamily(
            "camfleet_agent_outbox_dropped", "Messages the outbox dropped, by reason", labels=["reason"]
        )
        for reason, n in sorted(s.outbox_dropped.items()):
            out_dropped.add_metric([reason], n)
        yield out_dropped
        yield GaugeMetricFamily("camfleet_agent_mqtt_connected", "1 while connected", value=float(s.mqtt_connected))
        yield CounterMetricFamily("camfleet_agent_mqtt_reconnects", "MQTT reconnections", value=s.reconnects)
        models = GaugeMetricFamily(
            "camfleet_agent_model_info", "Active model version per classifier", labels=["classifier", "version"]
        )
        for classifier, version in sorted(s.models.items()):
            models.add_metric([classifier, version], 1.0)
        yield models
        yield GaugeMetricFamily(
            "camfleet_agent_config_version",
            "Version of the hub-signed settings applied (-1: none)",
            value=-1 if s.config_version is None else s.config_version,
        )
        yield CounterMetricFamily(
            "camfleet_agent_config_refused",
            "Config messages refused (signature, target, version)",
            value=s.config_refused,
        )
        yield GaugeMetricFamily(
            "camfleet_agent_clock_skew_seconds",
            "Local clock minus the hub's, from the last command",
            value=s.clock_skew_s,
        )
        yield GaugeMetricFamily("camfleet_agent_problems", "Problems reported in the status", value=len(s.problems))


class AgentMetrics:
    """The agent's Prometheus registry: its own, so several agents in one process (tests) do not collide."""

    def __init__(self, snapshot: Callable[[], HealthSnapshot]) -> None:
        self.snapshot = snapshot
        self.registry = CollectorRegistry()
        self.registry.register(_AgentCollector(snapshot))
        self.latency = Histogram(
            "camfleet_agent_inference_latency_seconds",
            "Time to classify one frame with one classifier",
            ["camera", "classifier"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def observe_latency(self, camera: str, classifier: str, seconds: float) -> None:
        self.latency.labels(camera, classifier).observe(max(0.0, seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def readiness(s: HealthSnapshot) -> list[str]:
    """Why the agent is not ready (empty: ready): broker unreachable, a camera down."""
    reasons = [] if s.mqtt_connected else ["mqtt: not connected"]
    reasons += [f"camera {c.name}: {c.error}" for c in s.cameras if c.error is not None]
    return reasons


class HealthServer:
    """A small threaded HTTP server on a local port (port 0 picks a free one; `port` tells which)."""

    def __init__(self, metrics: AgentMetrics, host: str, port: int) -> None:
        self.metrics = metrics
        handler = type("Handler", (_Handler,), {"metrics": metrics})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.host, self.port = str(self._server.server_address[0]), int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.2,), name="health", daemon=True)
        self._thread.start()
        log.info("health: serving /healthz /readyz /metrics on http://%s:%d", self.host, self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


class _Handler(BaseHTTPRequestHandler):
    metrics: AgentMetrics

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path = self.path.split("?", 1)[0]
        try:
            if path == "/healthz":
                self._send(200, b"ok\n", "text/plain; charset=utf-8")
            elif path == "/readyz":
                reasons = readiness(self.metrics.snapshot())
                body = json.dumps({"ready": not reasons, "reasons": reasons}).encode()
                self._send(503 if reasons else 200, body, "application/json")
            elif path == "/metrics":
                self._send(200, self.metrics.render(), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found: try /healthz, /readyz or /metrics\n", "text/plain; charset=utf-8")
        except Exception as exc:  # a broken snapshot must not take the server down
            log.exception("health: %s failed", path)
            self._send(500, f"error: {type(exc).__name__}\n".encode(), "text/plain; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - scrapes are not news
        pass
