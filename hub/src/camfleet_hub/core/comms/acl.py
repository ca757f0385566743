"""Who may publish, subscribe and retain what on the broker: the one place the MQTT topic rules are written.

``RULES`` is the table: per role, topic templates with an access (read, write, readwrite, deny). The embedded
broker asks the functions below on every CONNECT (last-will), SUBSCRIBE, PUBLISH and delivery; they read the same
table that ``comms/mosquitto_export.py`` writes into Mosquitto's ``acl_file``, one ``user`` block per credential,
so the two brokers cannot drift. Topics (``R`` = ``{root}/v1``)::

    hub       everything under R on the embedded broker; on Mosquitto its block in RULES (frames, events,
              statuses, replies, model announcements, commands, settings, Home Assistant topics)
    agent     publishes R/{site}/{camera}/frame|event (a camera of its own site that no other agent owns) and
              R/{site}/agents/{agent}/status|reply; reads R/{site}/models/+ and R/{site}/agents/{agent}/cmd|config;
              retains only its own status
    observer  reads R/{site}/+/event, R/{site}/agents/+/status, the Home Assistant state R/{site}/+/state/+ and the
              discovery configs under ``homeassistant/`` (site ``None``: every site); never publishes
    anonymous only when ``mqtt.allow_anonymous_loopback`` is set, from loopback: the hub's rights (development)

A ``deny`` rule wins over every other rule for any access, as in Mosquitto's acl_file.

Camera ownership (``cameras.agent``, see ``datasets/camera_owners.py``) is data, not a template: the embedded
broker passes ``may_publish`` a live ``OwnerLookup`` (a cache refreshed every few seconds), and the Mosquitto export
adds ``owned_camera_denies`` to each agent's block (``export-mosquitto --watch`` follows ownership changes). A
camera nobody owns yet stays writable by every agent of its site until a status claims it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


class Access(StrEnum):
    """An acl_file access word; ``deny`` refuses every access to the topics it matches."""

    READ = "read"
    WRITE = "write"
    READWRITE = "readwrite"
    DENY = "deny"


@dataclass(frozen=True)
class TopicRule:
    """One line of the table: ``template`` uses ``{R}`` (``{root}/v1``), ``{site}`` and ``{agent}``."""

    access: Access
    template: str


_R, _W, _RW, _DENY = Access.READ, Access.WRITE, Access.READWRITE, Access.DENY

RULES: dict[MqttRole, tuple[TopicRule, ...]] = {
    # The embedded broker lets the hub do anything; Mosquitto gets exactly these lines for it.
    MqttRole.HUB: (
        TopicRule(_R, "{R}/+/+/frame"),
        TopicRule(_R, "{R}/+/+/event"),
        TopicRule(_R, "{R}/+/agents/+/status"),
        TopicRule(_R, "{R}/+/agents/+/reply"),
        TopicRule(_RW, "{R}/+/models/+"),
        TopicRule(_W, "{R}/+/agents/+/cmd"),
        TopicRule(_RW, "{R}/+/agents/+/config"),
        TopicRule(_RW, HA_DISCOVERY_PREFIX + "/#"),  # discovery configs, and the retained state they name
        TopicRule(_RW, "{R}/+/+/state/+"),
    ),
    MqttRole.AGENT: (
        TopicRule(_W, "{R}/{site}/+/frame"),
        TopicRule(_W, "{R}/{site}/+/event"),
        TopicRule(_W, "{R}/{site}/agents/{agent}/status"),
        TopicRule(_W, "{R}/{site}/agents/{agent}/reply"),
        TopicRule(_R, "{R}/{site}/models/+"),
        TopicRule(_R, "{R}/{site}/agents/{agent}/cmd"),
        TopicRule(_R, "{R}/{site}/agents/{agent}/config"),
        # "+" in the camera level above also matches these words: frame/event there would be model or agent topics.
        *(
            TopicRule(_DENY, f"{{R}}/{{site}}/{word}/{kind}")
            for word in sorted(NOT_CAMERAS)
            for kind in ("event", "frame")
        ),
    ),
    MqttRole.OBSERVER: (
        TopicRule(_R, "{R}/{site}/+/event"),
        TopicRule(_R, "{R}/{site}/agents/+/status"),
        TopicRule(_R, "{R}/{site}/+/state/+"),
        TopicRule(_R, HA_DISCOVERY_PREFIX + "/#"),  # configs name only topics; Home Assistant connects as an observer
    ),
}
# What a role's retained messages (and retained last-will) may stay on the broker for (embedded broker only:
# Mosquitto's acl_file cannot say it).
RETAINED: dict[MqttRole, tuple[str, ...]] = {MqttRole.AGENT: ("{R}/{site}/agents/{agent}/status",)}


@dataclass(frozen=True)
class MqttPrincipal:
    """An authenticated MQTT client: its role and what it is bound to (agent: site + agent; observer: site)."""

    role: MqttRole
    username: str
    site: str | None = None
    agent: str | None = None


def render(template: str, p: MqttPrincipal, root: str) -> str:
    """A template of the table as a topic filter for ``p`` (no site: ``+``, every site)."""
    return template.format(R=f"{root}/{VERSION}", site=p.site or "+", agent=p.agent or "+")


def rules_for(p: MqttPrincipal, root: str) -> list[tuple[Access, str]]:
    """``p``'s lines of the table, rendered: what Mosquitto's ``user`` block for it says."""
    return [(rule.access, render(rule.template, p, root)) for rule in RULES.get(p.role, ())]


def _unrestricted(p: MqttPrincipal) -> bool:
    return p.role in (MqttRole.HUB, MqttRole.ANONYMOUS)


def _allowed(p: MqttPrincipal, topic_filter: str, root: str, grants: tuple[Access, ...]) -> bool:
    lines = rules_for(p, root)
    if any(access is Access.DENY and covers(allowed, topic_filter) for access, allowed in lines):
        return False
    return any(access in grants and covers(allowed, topic_filter) for access, allowed in lines)


# (site, camera) -> the agent that owns the camera, None when nobody does.
OwnerLookup = Callable[[str, str], str | None]
CAMERA_KINDS = ("event", "frame")


def may_publish(p: MqttPrincipal, topic: str, root: str, owner: OwnerLookup | None = None) -> bool:
    """May ``p`` publish on the concrete ``topic``? With ``owner``, an agent may not write for another's camera."""
    if _unrestricted(p):
        return True
    if not _allowed(p, topic, root, (Access.WRITE, Access.READWRITE)):
        return False
    return owner is None or p.role is not MqttRole.AGENT or not _foreign_camera(p, topic, root, owner)


def _foreign_camera(p: MqttPrincipal, topic: str, root: str, owner: OwnerLookup) -> bool:
    """True when ``topic`` is a frame/event topic of a camera owned by an agent other than ``p``."""
    prefix = f"{root}/{VERSION}/"
    if not topic.startswith(prefix):
        return False
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 3 or parts[2] not in CAMERA_KINDS:
        return False
    found = owner(parts[0], parts[1])
    return found is not None and found != p.agent


def owned_camera_denies(p: MqttPrincipal, root: str, owners: Mapping[tuple[str, str], str]) -> list[tuple[Access, str]]:
    """Deny lines for the frame/event topics of ``p``'s site's cameras owned by other agents (agents only)."""
    if p.role is not MqttRole.AGENT or p.site is None:
        return []
    foreign = sorted(camera for (site, camera), agent in owners.items() if site == p.site and agent != p.agent)
    prefix = f"{root}/{VERSION}/{p.site}"
    return [(Access.DENY, f"{prefix}/{camera}/{kind}") for camera in foreign for kind in CAMERA_KINDS]


def may_retain(p: MqttPrincipal, topic: str, root: str) -> bool:
    """May a retained message (or a retained last-will) from ``p`` stay on the broker? Agents: own status only."""
    if _unrestricted(p):
        return True
    return any(topic == render(template, p, root) for template in RETAINED.get(p.role, ()))


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
    return _unrestricted(p) or _allowed(p, topic_filter, root, (Access.READ, Access.READWRITE))


def may_receive(p: MqttPrincipal, topic: str, root: str) -> bool:
    """May ``p`` be sent a message published on the concrete ``topic``?"""
    return may_subscribe(p, topic, root)
