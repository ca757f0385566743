"""What the fleet pages show: every site, agent and camera with health, versions and alerts; one camera's timeline.

Typed rows (dataclasses) built from SQL: agents from their last retained status, cameras from their latest frame,
versions against each classifier's production model, alerts from simple rules stated next to their thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape

from sqlalchemy import and_, func, not_, or_, select
from sqlalchemy.orm import Session

from camfleet_hub.core.db.types import utcnow
from camfleet_hub.datasets.listing import none_of_the_above_names
from camfleet_hub.datasets.models import Camera, Classifier, Frame, Site
from camfleet_hub.fleet import behaviour
from camfleet_hub.fleet.models import Agent, AgentState, FleetEvent
from camfleet_hub.training.announce import production_model

OFFLINE_ALERT_MIN = 5  # an agent offline (or silent) this long is an alert
OUTBOX_ALERT = 100  # messages queued on the agent's disk: the broker or the hub is not keeping up
ANOMALY_JUMP = 2.0  # anomaly share of the last hour ≥ this × the share of the 24 h before, and ≥ ANOMALY_MIN
ANOMALY_MIN = 0.2
ANOMALY_MIN_EVENTS = 10


@dataclass(frozen=True)
class ModelCell:
    classifier: str
    version: str | None
    production: str | None

    @property
    def matches(self) -> bool:
        return self.version is not None and self.version == self.production


@dataclass
class AgentRow:
    site: str
    name: str
    online: bool
    last_seen: datetime | None
    software: str
    models: list[ModelCell]
    fps: dict[str, float]
    gate_ratio: dict[str, float]
    outbox_depth: int
    dropped: int
    config_version: int | None
    cameras: list[str]
    alerts: list[str] = field(default_factory=list)


@dataclass
class CameraRow:
    site: str
    name: str
    agent: str | None
    last_frame_id: str | None
    last_frame_at: datetime | None
    alerts: list[str] = field(default_factory=list)


@dataclass
class SiteRow:
    name: str
    agents: list[AgentRow]
    cameras: list[CameraRow]

    @property
    def alerts(self) -> int:
        return sum(len(a.alerts) for a in self.agents) + sum(len(c.alerts) for c in self.cameras)


def _latest_frames(session: Session, site_id: int) -> dict[int, tuple[str, datetime]]:
    latest = (
        select(Frame.camera_id, func.max(Frame.id).label("fid"))
        .where(Frame.site_id == site_id)
        .group_by(Frame.camera_id)
        .subquery()
    )
    rows = session.execute(
        select(Frame.camera_id, Frame.frame_id, Frame.captured_at).join(latest, latest.c.fid == Frame.id)
    )
    return {cam: (fid, at) for cam, fid, at in rows}


def _anomaly_jumps(session: Session, site_id: int, now: datetime) -> dict[str, str]:
    """Cameras whose anomaly share of the last hour jumped against the 24 hours before (camera → alert text).

    A frame put in a none-of-the-above group is flagged by design but is a kind the site already rejected, not a
    new one: it counts as a frame, not as an anomaly, so marking such a group does not raise the alarm."""
    out: dict[str, str] = {}
    known = [
        and_(FleetEvent.classifier == clf.name, FleetEvent.label.in_(names))
        for clf in session.scalars(select(Classifier).where(Classifier.site_id == site_id))
        if (names := none_of_the_above_names(session, clf))
    ]
    new_kind = and_(FleetEvent.anomaly, not_(or_(*known))) if known else FleetEvent.anomaly
    last_hour = FleetEvent.ts >= now - timedelta(hours=1)
    rows = session.execute(
        select(FleetEvent.camera, last_hour, new_kind, func.count())
        .where(FleetEvent.site_id == site_id, FleetEvent.ts >= now - timedelta(hours=25))
        .group_by(FleetEvent.camera, last_hour, new_kind)
    )
    counts: dict[tuple[str, bool], list[int]] = {}
    for camera, recent, anomaly, n in rows:
        c = counts.setdefault((camera, bool(recent)), [0, 0])
        c[0] += n
        c[1] += n if anomaly else 0
    for (camera, recent), (total, anomalies) in counts.items():
        if not recent or total < ANOMALY_MIN_EVENTS:
            continue
        share = anomalies / total
        before_total, before_anom = counts.get((camera, False), [0, 0])
        before = before_anom / before_total if before_total else 0.0
        if share >= ANOMALY_MIN and share >= ANOMALY_JUMP * before:
            out[camera] = f"anomaly rate jumped to {share:.0%} in the last hour (was {before:.0%})"
    return out


def fleet(
    session: Session, site_ids: list[int] | None, site: str | None = None, state: str | None = None
) -> list[SiteRow]:
    """Every visible site (or one), its agents and cameras; ``state``: online | offline | alert filters agents."""
    now = utcnow()
    q = select(Site).order_by(Site.name)
    if site_ids is not None:
        q = q.where(Site.id.in_(site_ids))
    if site:
        q = q.where(Site.name == site)
    out = []
    for s in session.scalars(q):
        classifiers = list(
            session.scalars(select(Classifier).where(Classifier.site_id == s.id).order_by(Classifier.name))
        )
        production = {}
        for clf in classifiers:
            model = production_model(session, clf)
            production[clf.name] = str(model.version) if model is not None else None
        agents = [
            _agent_row(s.name, a, production, now)
            for a in session.scalars(select(Agent).where(Agent.site_id == s.id).order_by(Agent.name))
        ]
        by_name = {a.name: a for a in agents}
        for clf in classifiers:  # a model version that flags far more frames than the one before, per agent
            for jump in behaviour.jumps(session, s.id, clf.name):
                if jump.agent in by_name:
                    by_name[jump.agent].alerts.append(f"anomaly rate jump: {jump.text}")
        owner = {cam: a.name for a in agents for cam in a.cameras}
        frames = _latest_frames(session, s.id)
        jumps = _anomaly_jumps(session, s.id, now)
        cameras = []
        for cam in session.scalars(select(Camera).where(Camera.site_id == s.id).order_by(Camera.name)):
            fid, at = frames.get(cam.id, (None, None))
            row = CameraRow(s.name, cam.name, owner.get(cam.name), fid, at)
            if cam.name in jumps:
                row.alerts.append(jumps[cam.name])
            cameras.append(row)
        if state == "online":
            agents = [a for a in agents if a.online]
        elif state == "offline":
            agents = [a for a in agents if not a.online]
        elif state == "alert":
            agents = [a for a in agents if a.alerts]
            cameras = [c for c in cameras if c.alerts]
        out.append(SiteRow(s.name, agents, cameras))
    return out


def _agent_row(site: str, agent: Agent, production: dict[str, str | None], now: datetime) -> AgentRow:
    status = agent.status or {}
    models = status.get("models") or {}
    online = agent.state == AgentState.ONLINE.value
    row = AgentRow(
        site=site,
        name=agent.name,
        online=online,
        last_seen=agent.last_seen_at,
        software=agent.software_version or "",
        models=[ModelCell(c, models.get(c), p) for c, p in sorted(production.items())],
        fps={str(k): float(v) for k, v in (status.get("fps") or {}).items()},
        gate_ratio={str(k): float(v) for k, v in (status.get("gate_ratio") or {}).items()},
        outbox_depth=int(status.get("outbox_depth") or 0),
        dropped=sum(int(v) for v in (status.get("dropped") or {}).values()),
        config_version=status.get("config_version"),
        cameras=[str(c) for c in status.get("cameras") or []],
    )
    silent = agent.last_seen_at is None or now - agent.last_seen_at > timedelta(minutes=OFFLINE_ALERT_MIN)
    if not online and silent:
        row.alerts.append(f"offline for more than {OFFLINE_ALERT_MIN} min")
    if row.outbox_depth >= OUTBOX_ALERT:
        row.alerts.append(f"outbox holds {row.outbox_depth} messages")
    for problem in status.get("problems") or []:
        if "model" in str(problem):
            row.alerts.append(f"model: {str(problem)[:200]}")
    return row


# --------------------------------------------------------------------------- one camera


@dataclass(frozen=True)
class TimelinePoint:
    ts: datetime
    classifier: str
    label: str
    anomaly: bool


def camera_events(session: Session, site: Site, camera: str, hours: int = 24, limit: int = 2000) -> list[TimelinePoint]:
    since = utcnow() - timedelta(hours=hours)
    rows = session.execute(
        select(FleetEvent.ts, FleetEvent.classifier, FleetEvent.label, FleetEvent.anomaly)
        .where(FleetEvent.site_id == site.id, FleetEvent.camera == camera, FleetEvent.ts >= since)
        .order_by(FleetEvent.ts.desc())
        .limit(limit)
    )
    return [TimelinePoint(ts, clf, label, bool(anomaly)) for ts, clf, label, anomaly in rows]


def latest_frames(session: Session, site: Site, camera: str, limit: int = 8) -> list[str]:
    return list(
        session.scalars(
            select(Frame.frame_id)
            .join(Camera, Camera.id == Frame.camera_id)
            .where(Frame.site_id == site.id, Camera.name == camera)
            .order_by(Frame.id.desc())
            .limit(limit)
        )
    )


PALETTE = ["#2563eb", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569"]


def timeline_svg(points: list[TimelinePoint], hours: int = 24, width: int = 720) -> str:
    """Class over time: one row per classifier/label, a tick per event, anomalies as red rings. Inline SVG."""
    rows = sorted({(p.classifier, p.label) for p in points})
    row_h, left, top = 18, 150, 20
    height = top + row_h * max(1, len(rows)) + 24
    now = utcnow()
    start = now - timedelta(hours=hours)
    span = (now - start).total_seconds()
    plot_w = width - left - 10

    def x(ts: datetime) -> float:
        return left + plot_w * max(0.0, min(1.0, (ts - start).total_seconds() / span))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="events of the last {hours} hours">'
    ]
    if not rows:
        parts.append(f'<text x="{left}" y="{top + 12}" fill="#6b7280">no events in the last {hours} hours</text>')
    for i, (clf, label) in enumerate(rows):
        y = top + i * row_h + row_h / 2
        colour = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<text x="{left - 6}" y="{y + 4}" text-anchor="end" font-size="11">{escape(clf)}: {escape(label)}</text>'
            f'<line x1="{left}" x2="{width - 10}" y1="{y}" y2="{y}" stroke="#e5e7eb"/>'
        )
        for p in points:
            if (p.classifier, p.label) == (clf, label):
                px = x(p.ts)
                parts.append(f'<rect class="ev" x="{px - 1:.1f}" y="{y - 6}" width="2" height="12" fill="{colour}"/>')
                if p.anomaly:
                    parts.append(f'<circle class="anomaly" cx="{px:.1f}" cy="{y}" r="5" fill="none" stroke="#dc2626"/>')
    axis_y = height - 16
    for h in range(0, hours + 1, max(1, hours // 6)):
        tx = left + plot_w * h / hours
        label_ts = start + timedelta(hours=h)
        anchor = "end" if h == hours else "middle"  # the last label would be cut off at the right edge
        parts.append(
            f'<text x="{tx:.1f}" y="{axis_y + 12}" font-size="10" text-anchor="{anchor}" fill="#6b7280">'
            f"{label_ts:%H:%M}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
