"""Home Assistant MQTT discovery: per camera × classifier a ``sensor`` (current label; probability, anomaly and model
as attributes) and a ``binary_sensor`` (anomaly), both available while the camera's agent is online.

The hub follows the events on the broker. The first event of a camera and classifier publishes the two retained
discovery configs under ``homeassistant/``; the state (retained, on ``{root}/v1/{site}/{camera}/state/{classifier}``)
is published when the label or the anomaly flag changes, not once per frame. Per site, on by default; switching it
off (``PATCH .../fleet-settings {"homeassistant": false}``) removes the site's entities (empty retained configs).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from camfleet_contract.messages import Event
from camfleet_hub import __version__
from camfleet_hub.core.comms.acl import HA_DISCOVERY_PREFIX
from camfleet_hub.datasets.models import Site
from camfleet_hub.fleet.events import validate_event
from camfleet_hub.fleet.models import FleetEvent, FleetSiteSettings
from camfleet_hub.ingest.validate import Rejection

if TYPE_CHECKING:
    from camfleet_hub.core.comms.mqtt import Received
    from camfleet_hub.core.container import HubCore

log = logging.getLogger(__name__)

DISCOVERY_PREFIX = HA_DISCOVERY_PREFIX  # one spelling, shared with the broker rules
SITE_CACHE_S = 10.0
# The agent's status is JSON with "state", or the bare last-will "offline": both map to online/offline.
AVAILABILITY_TEMPLATE = "{{ 'online' if (value_json is defined and value_json.state == 'online') else 'offline' }}"


@dataclass(frozen=True)
class Entity:
    """The two discovery messages of one camera × classifier."""

    sensor_topic: str
    sensor: dict[str, Any]
    binary_topic: str
    binary: dict[str, Any]


def _object_id(*parts: str) -> str:
    return "_".join(p.replace(".", "_").replace("-", "_") for p in ("camfleet", *parts))


def state_topic(prefix: str, site: str, camera: str, classifier: str) -> str:
    return f"{prefix}/{site}/{camera}/state/{classifier}"


def entity(prefix: str, site: str, camera: str, classifier: str, agent: str) -> Entity:
    """Discovery payloads in Home Assistant's documented schema for MQTT ``sensor`` and ``binary_sensor``."""
    oid = _object_id(site, camera, classifier)
    state = state_topic(prefix, site, camera, classifier)
    common: dict[str, Any] = {
        "state_topic": state,
        "availability_topic": f"{prefix}/{site}/agents/{agent}/status",
        "availability_template": AVAILABILITY_TEMPLATE,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [_object_id(site, camera)],
            "name": f"{site} {camera}",
            "manufacturer": "camfleet",
            "model": "camera",
            "sw_version": __version__,
        },
        "origin": {"name": "camfleet hub", "sw_version": __version__},
        "qos": 1,
    }
    sensor = {
        **common,
        "name": classifier,
        "unique_id": oid,
        "value_template": "{{ value_json.label }}",
        "json_attributes_topic": state,
        "json_attributes_template": (
            "{{ {'probability': value_json.probability, 'anomaly': value_json.anomaly, "
            "'anomaly_score': value_json.anomaly_score, 'model_version': value_json.model_version} | tojson }}"
        ),
        "icon": "mdi:cctv",
    }
    binary = {
        **common,
        "name": f"{classifier} anomaly",
        "unique_id": f"{oid}_anomaly",
        "value_template": "{{ 'ON' if value_json.anomaly else 'OFF' }}",
        "payload_on": "ON",
        "payload_off": "OFF",
        "device_class": "problem",
    }
    return Entity(
        f"{DISCOVERY_PREFIX}/sensor/{oid}/config",
        sensor,
        f"{DISCOVERY_PREFIX}/binary_sensor/{oid}_anomaly/config",
        binary,
    )


class StatePayload(BaseModel):
    """The retained state of a camera/classifier sensor (JSON; the entities' templates read ``value_json``)."""

    label: str
    probability: float
    anomaly: bool
    anomaly_score: float
    model_version: str
    ts: str = Field(description="the event's time, ISO 8601")


def state_payload(event: Event) -> StatePayload:
    return StatePayload(
        label=event.label,
        probability=round(event.probability, 4),
        anomaly=event.anomaly,
        anomaly_score=round(event.anomaly_score, 4),
        model_version=event.model_version,
        ts=event.ts.isoformat(),
    )


class HomeAssistantBridge:
    """Follows events on the hub's MQTT client and keeps Home Assistant's entities and states up to date."""

    def __init__(self, services: HubCore) -> None:
        self.services = services
        self._lock = threading.Lock()
        self._announced: set[tuple[str, str, str]] = set()
        self._last: dict[tuple[str, str, str], tuple[str, bool]] = {}
        self._sites: dict[str, tuple[bool, float]] = {}
        self.published_states = 0

    def start(self) -> None:
        self.services.mqtt.subscribe(self.services.topics.events_subscription(), self._on_event, qos=1)

    def _enabled(self, site: str) -> bool:
        now = time.monotonic()
        cached = self._sites.get(site)
        if cached is not None and now - cached[1] < SITE_CACHE_S:
            return cached[0]
        with self.services.sessions() as session:
            row = session.execute(
                select(FleetSiteSettings.homeassistant, Site.id)
                .select_from(Site)
                .outerjoin(FleetSiteSettings, FleetSiteSettings.site_id == Site.id)
                .where(Site.name == site)
            ).first()
        enabled = row is not None and row[0] is not False  # no settings row: on by default; unknown site: off
        self._sites[site] = (enabled, now)
        return enabled

    def _on_event(self, msg: Received) -> None:
        try:
            valid = validate_event(self.services.topics, msg.topic, msg.payload)
            self.handle(valid.event)
        except Rejection:
            return  # the ingest worker counts and dead-letters it
        except Exception:  # noqa: BLE001 - never let a database hiccup end the MQTT thread
            log.exception("home assistant: event on %s not handled", msg.topic)

    def handle(self, event: Event) -> None:
        if not self._enabled(event.site):
            return
        key = (event.site, event.camera, event.classifier)
        prefix = self.services.topics.prefix
        with self._lock:
            if key not in self._announced:
                e = entity(prefix, event.site, event.camera, event.classifier, event.agent)
                self._publish(e.sensor_topic, json.dumps(e.sensor))
                self._publish(e.binary_topic, json.dumps(e.binary))
                self._announced.add(key)
            now = (event.label, event.anomaly)
            if self._last.get(key) == now:
                return
            self._last[key] = now
        self._publish(state_topic(prefix, *key), json.dumps(state_payload(event).model_dump()))
        self.published_states += 1

    def _publish(self, topic: str, payload: str) -> None:
        self.services.mqtt.publish(topic, payload, qos=1, retain=True)

    def switch(self, site: str, enabled: bool) -> None:
        """After the site's option changed: off removes every entity the site's events name (empty retained)."""
        self._sites.pop(site, None)
        if enabled:
            return
        prefix = self.services.topics.prefix
        with self.services.sessions() as session:
            rows = session.execute(
                select(FleetEvent.camera, FleetEvent.classifier, FleetEvent.agent)
                .join(Site, Site.id == FleetEvent.site_id)
                .where(Site.name == site)
                .distinct()
            ).all()
        with self._lock:
            for camera, classifier, agent in rows:
                e = entity(prefix, site, camera, classifier, agent)
                self._publish(e.sensor_topic, "")
                self._publish(e.binary_topic, "")
                self._publish(state_topic(prefix, site, camera, classifier), "")
                self._announced.discard((site, camera, classifier))
                self._last.pop((site, camera, classifier), None)
