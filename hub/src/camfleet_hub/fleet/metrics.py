"""Prometheus ``/metrics`` of the hub: HTTP requests (classify included) by route, and, read at scrape time, the
ingest counters, queue depth and commit latency, jobs by state and agents online.

One registry per app (never the process-wide default), so two hubs in one process, as in the tests, never mix.
Rates ("frames per second") are Prometheus' ``rate()`` over the counters, as usual.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from camfleet_hub.datasets.models import Site
from camfleet_hub.fleet.models import Agent, AgentState
from camfleet_hub.imports.models import ImportJob
from camfleet_hub.training.models import TrainingJob

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubServices

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"  # 404s keep one label value, so a scanner cannot blow up the series count


class _StateCollector(Collector):
    """Reads the hub's live state when Prometheus scrapes."""

    def __init__(self, services: HubServices) -> None:
        self.services = services

    def collect(self) -> Iterable[Metric]:
        snap = self.services.ingest_stats.snapshot()
        frames = CounterMetricFamily("camfleet_hub_ingest_frames", "Frames stored for the first time")
        frames.add_metric([], float(snap.accepted))
        yield frames
        dup = CounterMetricFamily("camfleet_hub_ingest_duplicates", "Redelivered frames (already stored)")
        dup.add_metric([], float(snap.duplicates))
        yield dup
        events = CounterMetricFamily("camfleet_hub_ingest_events", "Agent events stored in the event history")
        events.add_metric([], float(snap.events))
        yield events
        rejected = CounterMetricFamily(
            "camfleet_hub_ingest_rejected", "Messages rejected, by reason", labels=["reason"]
        )
        for reason, n in sorted(snap.rejected.items()):
            rejected.add_metric([reason], float(n))
        yield rejected
        depth = GaugeMetricFamily("camfleet_hub_ingest_queue_depth", "Messages received, not yet committed")
        depth.add_metric([], float(snap.queue_depth))
        yield depth
        buckets, total, count = self.services.ingest_stats.commit_histogram()
        hist = HistogramMetricFamily("camfleet_hub_ingest_commit_seconds", "Ingest batch commit latency")
        hist.add_metric([], [(str(b), float(c)) for b, c in buckets] + [("+Inf", float(count))], total)
        yield hist
        yield from self._database()

    def _database(self) -> Iterable[Metric]:
        with self.services.sessions() as session:
            jobs = session.execute(select(TrainingJob.status, func.count()).group_by(TrainingJob.status)).all()
            imports = session.execute(select(ImportJob.status, func.count()).group_by(ImportJob.status)).all()
            agents = session.execute(
                select(Site.name, Agent.state, func.count())
                .join(Site, Site.id == Agent.site_id)
                .group_by(Site.name, Agent.state)
            ).all()
        training = GaugeMetricFamily("camfleet_hub_training_jobs", "Training jobs by state", labels=["state"])
        for state, n in jobs:
            training.add_metric([state], float(n))
        yield training
        imp = GaugeMetricFamily("camfleet_hub_import_jobs", "Import jobs by state", labels=["state"])
        for state, n in imports:
            imp.add_metric([state], float(n))
        yield imp
        online = GaugeMetricFamily("camfleet_hub_agents_online", "Agents whose last status is online", labels=["site"])
        total = GaugeMetricFamily("camfleet_hub_agents", "Agents known, by site and state", labels=["site", "state"])
        per_site: dict[str, float] = {}
        for site, state, n in agents:
            total.add_metric([site, state], float(n))
            per_site.setdefault(site, 0.0)
            if state == AgentState.ONLINE.value:
                per_site[site] += float(n)
        for site, up in sorted(per_site.items()):
            online.add_metric([site], up)
        yield online
        yield total


class HubMetrics:
    """The registry behind ``/metrics`` and the ASGI middleware that counts and times HTTP requests."""

    def __init__(self, services: HubServices) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "camfleet_hub_http_requests",
            "HTTP requests by route template, method and status (classify: route=/api/v1/classify)",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "camfleet_hub_http_request_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.registry.register(_StateCollector(services))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)


class MetricsMiddleware:
    """Pure ASGI (no body buffering): times every HTTP request and labels it with its route template."""

    def __init__(self, app: ASGIApp, metrics: HubMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = route_template(scope) if scope.get("route") is not None else UNMATCHED
            self.metrics.observe(template, scope.get("method", "GET"), status, time.perf_counter() - start)


def route_template(scope: Scope) -> str:
    """The matched route's template, e.g. ``/api/v1/sites/{site}/cameras``: the request path with each path
    parameter's segment named (the route object FastAPI leaves in the scope lacks the router's prefix)."""
    params = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    parts = str(scope.get("path", "")).split("/")
    return "/".join(f"{{{params.pop(p)}}}" if p in params else p for p in parts)
