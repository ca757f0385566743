"""Fleet services: agent settings (versioned, hub-signed, retained), commands and their replies, site options, and
the ``FleetRuntime`` the hub starts (reply listener, event retention sweeper)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from camfleet_contract.agent_config import MAX_AGENT_CAMERAS, AgentConfig, CameraConfig
from camfleet_contract.messages import (
    MAX_MESSAGE_BYTES,
    MAX_SIGNED_CONFIG_CHARS,
    AgentConfigDocument,
    Command,
    CommandReply,
    MessageError,
    SignedConfig,
    from_json,
    to_json,
)
from camfleet_contract.signing import sign
from camfleet_contract.topics import TopicError, validate_name
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import ConflictError, InvalidError, NotFoundError
from camfleet_hub.datasets import camera_owners, crud
from camfleet_hub.datasets.models import Camera, Site
from camfleet_hub.fleet import events
from camfleet_hub.fleet.homeassistant import HomeAssistantBridge
from camfleet_hub.fleet.models import DEFAULT_RETENTION_DAYS, Agent, AgentConfigVersion, FleetCommand, FleetSiteSettings
from camfleet_hub.ingest.persist import insert_ignore
from camfleet_hub.serving import logs as prediction_logs

if TYPE_CHECKING:
    from camfleet_hub.core.comms.mqtt import Received
    from camfleet_hub.core.container import HubCore, HubServices

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 3600.0


# --------------------------------------------------------------------------- site options


@dataclass(frozen=True)
class SiteOptions:
    site: str
    event_retention_days: int
    homeassistant: bool


def site_options(session: Session, site: Site) -> SiteOptions:
    row = session.get(FleetSiteSettings, site.id)
    if row is None:
        return SiteOptions(site.name, DEFAULT_RETENTION_DAYS, True)
    return SiteOptions(site.name, row.event_retention_days, row.homeassistant)


def update_site_options(
    session: Session, site: Site, retention_days: int | None, homeassistant: bool | None
) -> SiteOptions:
    row = session.get(FleetSiteSettings, site.id)
    if row is None:
        row = FleetSiteSettings(site_id=site.id, event_retention_days=DEFAULT_RETENTION_DAYS, homeassistant=True)
        session.add(row)
    if retention_days is not None:
        row.event_retention_days = retention_days
    if homeassistant is not None:
        row.homeassistant = homeassistant
    session.commit()
    return site_options(session, site)


# --------------------------------------------------------------------------- agent settings


@dataclass(frozen=True)
class AgentSettings:
    """One stored version of an agent's settings, and what the agent reports applying."""

    site: str
    agent: str
    version: int
    config: AgentConfig
    created_by: str
    created_at: object
    applied_version: int | None


def applied_config_version(session: Session, site: Site, agent: str) -> int | None:
    row = session.execute(select(Agent).where(Agent.site_id == site.id, Agent.name == agent)).scalar_one_or_none()
    if row is None or not row.status:
        return None
    value = row.status.get("config_version")
    return value if isinstance(value, int) else None


def _settings_of(session: Session, site: Site, row: AgentConfigVersion) -> AgentSettings:
    return AgentSettings(
        site=site.name,
        agent=row.agent,
        version=row.version,
        config=AgentConfig.model_validate(row.config),
        created_by=row.created_by,
        created_at=row.created_at,
        applied_version=applied_config_version(session, site, row.agent),
    )


def current_settings(session: Session, site: Site, agent: str) -> AgentSettings:
    row = session.execute(
        select(AgentConfigVersion)
        .where(AgentConfigVersion.site_id == site.id, AgentConfigVersion.agent == agent)
        .order_by(AgentConfigVersion.version.desc())
        .limit(1)
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"agent {agent!r} of site {site.name!r} has no settings from the hub yet")
    return _settings_of(session, site, row)


def settings_history(session: Session, site: Site, agent: str, limit: int = 50) -> list[AgentSettings]:
    rows = session.scalars(
        select(AgentConfigVersion)
        .where(AgentConfigVersion.site_id == site.id, AgentConfigVersion.agent == agent)
        .order_by(AgentConfigVersion.version.desc())
        .limit(limit)
    )
    return [_settings_of(session, site, r) for r in rows]


def settings_message(site: str, agent: str, config: AgentConfig, signing_key: str) -> bytes:
    """The retained message for the agent, as sent: the document as exact JSON text and the fleet key's signature of
    it. Settings the agent could not read (text over MAX_SIGNED_CONFIG_CHARS characters, a message over
    MAX_MESSAGE_BYTES bytes, e.g. many cameras with large gate masks) are an InvalidError naming the sizes."""
    text = AgentConfigDocument(site=site, agent=agent, config=config).model_dump_json()
    hint = "use fewer cameras, or fewer or simpler gate masks and regions"
    if len(text) > MAX_SIGNED_CONFIG_CHARS:
        raise InvalidError(
            f"cameras: the settings of agent {agent!r} come to {len(text)} characters as signed JSON, over the limit "
            f"of {MAX_SIGNED_CONFIG_CHARS}; {hint}"
        )
    payload = to_json(SignedConfig(config=text, signature=sign(text.encode(), signing_key)))
    if len(payload) > MAX_MESSAGE_BYTES:  # non-ASCII text takes more bytes than characters
        raise InvalidError(
            f"cameras: the settings message of agent {agent!r} comes to {len(payload)} bytes, over the limit of "
            f"{MAX_MESSAGE_BYTES}; {hint}"
        )
    return payload


def assign_cameras(session: Session, site: Site, agent: str, names: list[str], take_over: bool = False) -> None:
    """Make ``agent`` the owner of the cameras its settings name (registered when new), as a site admin saving them
    means; trust on first use is left to cameras nobody configured, so a stolen agent login cannot claim them
    before their agent reports. A camera another agent owns is a ConflictError unless ``take_over`` (the camera
    page's "move it to this agent"); an agent never comes to own more than MAX_AGENT_CAMERAS."""
    names = sorted(set(names))
    reserved = [n for n in names if n.lower() in crud.RESERVED_CAMERA_NAMES]
    if reserved:
        raise InvalidError(f"cameras: {', '.join(map(repr, reserved))} reserved (MQTT topic words)")
    found = select(Camera.name, Camera.agent).where(Camera.site_id == site.id, Camera.name.in_(names))
    owner: dict[str, str | None] = {name: owned_by for name, owned_by in session.execute(found)}
    others = {n: o for n, o in owner.items() if o is not None and o != agent}
    if others and not take_over:
        taken = "; ".join(f"camera {n!r} belongs to agent {o!r}" for n, o in sorted(others.items()))
        raise ConflictError(
            f"cameras: {taken}. Move it to agent {agent!r} on its camera page, or release it "
            f"(PATCH /api/v1/sites/{site.name}/cameras/{{camera}} with agent null) first"
        )
    owned = set(session.scalars(select(Camera.name).where(Camera.site_id == site.id, Camera.agent == agent)))
    would_own = len(owned.union(names))
    if would_own > MAX_AGENT_CAMERAS:
        raise InvalidError(
            f"cameras: agent {agent!r} would own {would_own} cameras of site {site.name!r}, "
            f"at most {MAX_AGENT_CAMERAS}; release some first"
        )
    insert_ignore(
        session, Camera, [{"site_id": site.id, "name": n} for n in names if n not in owner], ["site_id", "name"]
    )
    if others:  # taking over: every named camera becomes the agent's, whoever owned it
        stmt = update(Camera).where(Camera.site_id == site.id, Camera.name.in_(names))
        session.execute(stmt.values(agent=agent))
    else:
        camera_owners.claim(session, site.id, agent, names)


def save_settings(
    services: HubServices,
    session: Session,
    site: Site,
    agent: str,
    cameras: list[CameraConfig],
    by: str,
    take_over: bool = False,
) -> AgentSettings:
    """Store a new version (previous + 1), make the agent the owner of its cameras (``assign_cameras``) and publish
    it signed and retained on the agent's config topic; the message is built and size-checked first, so settings
    too big to deliver are refused with nothing stored."""
    try:
        validate_name(agent, "agent")
    except TopicError as exc:
        raise InvalidError(str(exc)) from None
    last = session.execute(
        select(func.max(AgentConfigVersion.version)).where(
            AgentConfigVersion.site_id == site.id, AgentConfigVersion.agent == agent
        )
    ).scalar_one()
    try:
        config = AgentConfig(version=(last or 0) + 1, cameras=cameras)
    except ValidationError as exc:  # the request schema checks the same; this keeps other callers honest
        raise InvalidError(f"settings of agent {agent!r}: {exc.errors()[0]['msg']}") from None
    message = settings_message(site.name, agent, config, services.fleet_signing_key)
    assign_cameras(session, site, agent, [c.name for c in config.cameras], take_over)
    row = AgentConfigVersion(
        site_id=site.id, agent=agent, version=config.version, config=config.model_dump(mode="json"), created_by=by
    )
    session.add(row)
    session.commit()  # a concurrent save of the same version fails on the unique key here, before publishing
    services.mqtt.publish(services.topics.config(site.name, agent), message, qos=1, retain=True)
    return _settings_of(session, site, row)


def camera_settings(session: Session, site: Site, camera: str) -> tuple[str, CameraConfig] | None:
    """(agent, settings) of the newest stored settings that name this camera, if any."""
    agents = session.execute(
        select(AgentConfigVersion.agent, func.max(AgentConfigVersion.version))
        .where(AgentConfigVersion.site_id == site.id)
        .group_by(AgentConfigVersion.agent)
    ).all()
    for agent, _version in agents:
        current = current_settings(session, site, agent)
        for cam in current.config.cameras:
            if cam.name == camera:
                return agent, cam
    return None


# --------------------------------------------------------------------------- commands


def send_command(
    services: HubServices, session: Session, site: Site, agent: str, command: str, camera: str | None, by: str
) -> FleetCommand:
    """Record the command, then publish it on the agent's command topic (QoS 1, not retained)."""
    try:
        validate_name(agent, "agent")
    except TopicError as exc:
        raise InvalidError(str(exc)) from None
    if command == "restart" and camera is None:
        raise InvalidError("command 'restart' needs camera (the camera to close and reopen)")
    msg = Command.model_validate({"command": command, "camera": camera})
    row = FleetCommand(
        command_id=msg.command_id, site_id=site.id, agent=agent, command=command, camera=camera, sent_by=by
    )
    session.add(row)
    session.commit()
    services.mqtt.publish(services.topics.cmd(site.name, agent), to_json(msg), qos=1)
    return row


def get_command(session: Session, site: Site, command_id: str) -> FleetCommand:
    row = session.execute(
        select(FleetCommand).where(FleetCommand.site_id == site.id, FleetCommand.command_id == command_id)
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"command {command_id!r} of site {site.name!r} not found")
    return row


def list_commands(session: Session, site: Site, agent: str, limit: int = 50) -> list[FleetCommand]:
    return list(
        session.scalars(
            select(FleetCommand)
            .where(FleetCommand.site_id == site.id, FleetCommand.agent == agent)
            .order_by(FleetCommand.id.desc())
            .limit(limit)
        )
    )


def record_reply(session: Session, site: str, agent: str, reply: CommandReply) -> bool:
    """Attach an agent's reply to the command it answers; False when no such command of that agent exists."""
    if reply.command_id is None or reply.agent != agent:
        return False
    row = session.execute(
        select(FleetCommand)
        .join(Site, Site.id == FleetCommand.site_id)
        .where(Site.name == site, FleetCommand.agent == agent, FleetCommand.command_id == reply.command_id)
    ).scalar_one_or_none()
    if row is None:
        return False
    row.result = reply.result
    row.message = reply.message
    row.replied_at = utcnow()
    session.commit()
    return True


# --------------------------------------------------------------------------- runtime


class FleetRuntime:
    """What the fleet domain runs inside the hub: the command reply listener, the event retention sweeper and the
    Home Assistant bridge."""

    def __init__(self, services: HubCore, sweep_every_s: float = SWEEP_EVERY_S) -> None:
        self.services = services
        self.sweep_every_s = sweep_every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swept = 0
        self.homeassistant = HomeAssistantBridge(services)

    def start(self) -> None:
        topics = self.services.topics
        self.services.mqtt.subscribe(f"{topics.prefix}/+/agents/+/reply", self._on_reply, qos=1)
        self.homeassistant.start()
        self._thread = threading.Thread(target=self._sweeper, name="fleet-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def sweep_now(self) -> int:
        """Age out camera events and REST prediction logs past their site's retention; returns events deleted."""
        n = predictions = 0
        with self.services.sessions() as session:
            for site_id, cutoff in events.retention_cutoffs(session).items():
                n += events.sweep(session, site_id, cutoff)
                predictions += prediction_logs.sweep(session, site_id, cutoff)
        self.swept += n
        if n or predictions:
            log.info("fleet: %d event(s), %d prediction log row(s) past their site's retention deleted", n, predictions)
        return n

    def _sweeper(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep_now()
            except Exception:  # noqa: BLE001 - retention is retried on the next round
                log.exception("fleet: event retention sweep failed")
            self._stop.wait(self.sweep_every_s)

    def _on_reply(self, msg: Received) -> None:
        try:
            parsed = self.services.topics.parse(msg.topic)
            reply = from_json(CommandReply, msg.payload)
        except (TopicError, MessageError) as exc:
            log.warning("fleet: unreadable command reply on %s: %s", msg.topic, exc)
            return
        if parsed.kind != "reply" or parsed.agent is None:
            return
        try:
            with self.services.sessions() as session:
                if not record_reply(session, parsed.site, parsed.agent, reply):
                    log.info(
                        "fleet: reply of %s/%s to an unknown command %r", parsed.site, parsed.agent, reply.command_id
                    )
        except Exception:  # noqa: BLE001 - never let a database hiccup kill the MQTT thread
            log.exception("fleet: storing the reply on %s failed", msg.topic)
