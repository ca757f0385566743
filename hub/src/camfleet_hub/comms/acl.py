"""Who may publish, subscribe and retain what on the broker: the one place the MQTT topic rules are written.

The embedded broker asks these functions on every CONNECT (last-will), SUBSCRIBE, PUBLISH and delivery;
``deploy/mosquitto/acl`` states the same rules for Mosquitto. Topics (``R`` = ``{root}/v1``)::

    hub       everything under R (ingests frames, watches agents, announces models, sends commands)
    agent     publishes R/{site}/{camera}/frame|event (any camera of its own site) and
              R/{site}/agents/{agent}/status|reply; reads R/{site}/models/+ and R/{site}/agents/{agent}/cmd|config;
              retains only its own status
    observer  reads R/{site}/+/event, R/{site}/agents/+/status, the Home Assistant state R/{site}/+/state/+ and the
              discovery configs under ``homeassistant/`` (site ``None``: every site); never publishes
    anonymous only when ``mqtt.allow_anonymous_loopback`` is set, from loopback: the hub's rights (development)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from camfleet_contract.topics import VERSION

HA_DISCOVERY_PREFIX = "homeassistant"
# Second-level names that are not cameras: a "camera" called ``models`` would turn a frame topic into a model one.
NOT_CAMERAS = frozenset({"agents", "models"})


class MqttRole(StrEnum):
    """The kinds of MQTT principal; each has one fixed set of topic rules above."""

    HUB = "hub"
    AGENT = "agent"
    OBSERVER = "observer"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class MqttPrincipal:
    """An authenticated MQTT client: its role and what it is bound to (agent: site + agent; observer: site)."""

    role: MqttRole
    username: str
    site: str | None = None
    agent: str | None = None


def _levels(topic: str, prefix: str) -> list[str] | None:
    """The levels after ``{root}/v1/``, or None for a topic outside the camfleet tree."""
    if not topic.startswith(prefix + "/"):
        return None
    return topic[len(prefix) + 1 :].split("/")


def _unrestricted(p: MqttPrincipal) -> bool:
    return p.role in (MqttRole.HUB, MqttRole.ANONYMOUS)


def may_publish(p: MqttPrincipal, topic: str, root: str) -> bool:
    """May ``p`` publish on the concrete ``topic``?"""
    if _unrestricted(p):
        return True
    if p.role is not MqttRole.AGENT:
        return False
    levels = _levels(topic, f"{root}/{VERSION}")
    if levels is None or not levels or levels[0] != p.site:
        return False
    if len(levels) == 3 and levels[2] in ("frame", "event"):
        return levels[1] not in NOT_CAMERAS
    return levels[:3] == [p.site, "agents", p.agent] and len(levels) == 4 and levels[3] in ("status", "reply")


def may_retain(p: MqttPrincipal, topic: str, root: str) -> bool:
    """May a retained message (or a retained last-will) from ``p`` stay on the broker? Agents: own status only."""
    if _unrestricted(p):
        return True
    return p.role is MqttRole.AGENT and topic == f"{root}/{VERSION}/{p.site}/agents/{p.agent}/status"


def _read_filters(p: MqttPrincipal, root: str) -> list[str]:
    prefix = f"{root}/{VERSION}"
    if p.role is MqttRole.AGENT:
        own = f"{prefix}/{p.site}/agents/{p.agent}"
        return [f"{prefix}/{p.site}/models/+", f"{own}/cmd", f"{own}/config"]
    if p.role is MqttRole.OBSERVER:
        site = p.site or "+"
        return [
            f"{prefix}/{site}/+/event",
            f"{prefix}/{site}/agents/+/status",
            f"{prefix}/{site}/+/state/+",
            f"{HA_DISCOVERY_PREFIX}/#",  # configs name only topics; Home Assistant connects as an observer
        ]
    return []


def covers(allowed: str, requested: str) -> bool:
    """True when every topic matching the filter ``requested`` also matches the filter ``allowed``."""
    a, r = allowed.split("/"), requested.split("/")
    for i, level in enumerate(a):
        if level == "#":
            return True
        if i >= len(r):
            return False
        if level == "+":
            if r[i] == "#":
                return False
            continue
        if r[i] != level:  # a literal covers only the same literal, never a wildcard
            return False
    return len(a) == len(r)


def may_subscribe(p: MqttPrincipal, topic_filter: str, root: str) -> bool:
    """May ``p`` subscribe to ``topic_filter``? Only when the filter lies wholly inside what it may read."""
    if _unrestricted(p):
        return True
    return any(covers(allowed, topic_filter) for allowed in _read_filters(p, root))


def may_receive(p: MqttPrincipal, topic: str, root: str) -> bool:
    """May ``p`` be sent a message published on the concrete ``topic``?"""
    return may_subscribe(p, topic, root)
