"""MQTT topic names of wire protocol v1, and their parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, ValidationInfo

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_ROOT = "camfleet"
VERSION = "v1"

TopicKind = Literal["frame", "event", "status", "model", "cmd", "reply", "config"]


class TopicError(ValueError):
    """A topic or a name inside one is not valid."""


def validate_name(value: str, field: str = "name") -> str:
    """Site, camera, agent and classifier names: safe in topics, paths and URLs."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise TopicError(
            f"{field}={value!r} is not a valid name: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return value


def _name_field(value: str, info: ValidationInfo) -> str:
    return validate_name(value, info.field_name or "name")  # a ValueError: pydantic reports it per field


Name = Annotated[str, AfterValidator(_name_field)]
"""A pydantic field type for site, camera, agent and classifier names."""


_AGENT_KINDS: dict[str, TopicKind] = {"status": "status", "cmd": "cmd", "reply": "reply", "config": "config"}


@dataclass(frozen=True)
class Topic:
    kind: TopicKind
    site: str
    camera: str | None = None
    agent: str | None = None
    classifier: str | None = None


class Topics:
    """Builds and parses `{root}/v1/...` topics."""

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        for part in root.split("/"):
            validate_name(part, "topic root")
        self.root = root
        self.prefix = f"{root}/{VERSION}"

    def frame(self, site: str, camera: str) -> str:
        return f"{self.prefix}/{validate_name(site, 'site')}/{validate_name(camera, 'camera')}/frame"

    def event(self, site: str, camera: str) -> str:
        return f"{self.prefix}/{validate_name(site, 'site')}/{validate_name(camera, 'camera')}/event"

    def status(self, site: str, agent: str) -> str:
        return f"{self.prefix}/{validate_name(site, 'site')}/agents/{validate_name(agent, 'agent')}/status"

    def cmd(self, site: str, agent: str) -> str:
        return f"{self.prefix}/{validate_name(site, 'site')}/agents/{validate_name(agent, 'agent')}/cmd"

    def reply(self, site: str, agent: str) -> str:
        """Where an agent answers its commands (agent → hub)."""
        return f"{self.prefix}/{validate_name(site, 'site')}/agents/{validate_name(agent, 'agent')}/reply"

    def config(self, site: str, agent: str) -> str:
        """The agent's hub-signed settings (hub → agent, retained)."""
        return f"{self.prefix}/{validate_name(site, 'site')}/agents/{validate_name(agent, 'agent')}/config"

    def model(self, site: str, classifier: str) -> str:
        return f"{self.prefix}/{validate_name(site, 'site')}/models/{validate_name(classifier, 'classifier')}"

    def frames_subscription(self, shared_group: str | None = None) -> str:
        """All sites' frames; with a group, a shared subscription so several hubs split the load."""
        topic = f"{self.prefix}/+/+/frame"
        return f"$share/{validate_name(shared_group, 'shared_group')}/{topic}" if shared_group else topic

    def events_subscription(self) -> str:
        return f"{self.prefix}/+/+/event"

    def statuses_subscription(self) -> str:
        return f"{self.prefix}/+/agents/+/status"

    def models_subscription(self, site: str) -> str:
        return f"{self.prefix}/{validate_name(site, 'site')}/models/+"

    def parse(self, topic: str) -> Topic:
        """Parse a concrete topic; raises TopicError naming what is wrong."""
        if not topic.startswith(self.prefix + "/"):
            raise TopicError(f"topic {topic!r} does not start with {self.prefix!r}")
        parts = topic[len(self.prefix) + 1 :].split("/")
        try:
            if len(parts) == 3 and parts[2] in ("frame", "event"):
                kind: TopicKind = "frame" if parts[2] == "frame" else "event"
                return Topic(kind, validate_name(parts[0], "site"), camera=validate_name(parts[1], "camera"))
            if len(parts) == 4 and parts[1] == "agents" and parts[3] in ("status", "cmd", "reply", "config"):
                kind = _AGENT_KINDS[parts[3]]
                return Topic(kind, validate_name(parts[0], "site"), agent=validate_name(parts[2], "agent"))
            if len(parts) == 3 and parts[1] == "models":
                return Topic("model", validate_name(parts[0], "site"), classifier=validate_name(parts[2], "classifier"))
        except TopicError as exc:
            raise TopicError(f"topic {topic!r}: {exc}") from None
        raise TopicError(f"topic {topic!r} is not a camfleet {VERSION} topic")
