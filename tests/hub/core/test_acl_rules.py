"""The topic rules as a table: what an agent may publish, read and retain (the embedded broker asks these)."""

from __future__ import annotations

import pytest

from camfleet_hub.core.comms.acl import (
    Access,
    MqttPrincipal,
    MqttRole,
    may_publish,
    may_retain,
    may_subscribe,
    owned_camera_denies,
)

AGENT = MqttPrincipal(MqttRole.AGENT, "agent/shop/a1", site="shop", agent="a1")
R = "camfleet/v1"


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        (f"{R}/shop/door/frame", True),
        (f"{R}/shop/door/event", True),
        (f"{R}/shop/agents/a1/status", True),
        (f"{R}/shop/agents/a1/reply", True),
        (f"{R}/shop/agents/a2/reply", False),
        (f"{R}/shop/agents/a1/config", False),
        (f"{R}/shop/agents/a1/cmd", False),
        (f"{R}/shop/models/door", False),
        (f"{R}/plaza/door/frame", False),
        (f"{R}/shop/agents/a1/status/extra", False),
    ],
)
def test_agent_publish(topic: str, allowed: bool) -> None:
    assert may_publish(AGENT, topic, "camfleet") is allowed


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [
        (f"{R}/shop/models/+", True),
        (f"{R}/shop/agents/a1/cmd", True),
        (f"{R}/shop/agents/a1/config", True),
        (f"{R}/shop/agents/a2/config", False),
        (f"{R}/shop/agents/+/config", False),
        (f"{R}/shop/agents/a1/reply", False),
        (f"{R}/#", False),
    ],
)
def test_agent_subscribe(topic_filter: str, allowed: bool) -> None:
    assert may_subscribe(AGENT, topic_filter, "camfleet") is allowed


def test_agent_retains_only_its_status() -> None:
    assert may_retain(AGENT, f"{R}/shop/agents/a1/status", "camfleet")
    assert not may_retain(AGENT, f"{R}/shop/agents/a1/reply", "camfleet")


OBSERVER = MqttPrincipal(MqttRole.OBSERVER, "observer/shop/ha", site="shop")


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [
        ("homeassistant/#", True),  # Home Assistant's discovery
        (f"{R}/shop/+/state/+", True),
        (f"{R}/shop/door/state/lights", True),
        (f"{R}/plaza/+/state/+", False),
        (f"{R}/shop/+/frame", False),
        (f"{R}/shop/agents/+/cmd", False),
    ],
)
def test_observer_reads_home_assistant_topics(topic_filter: str, allowed: bool) -> None:
    assert may_subscribe(OBSERVER, topic_filter, "camfleet") is allowed
    assert not may_publish(OBSERVER, "homeassistant/sensor/x/config", "camfleet")


def test_agents_cannot_publish_home_assistant_state() -> None:
    assert not may_publish(AGENT, f"{R}/shop/door/state/lights", "camfleet")
    assert not may_publish(AGENT, "homeassistant/sensor/x/config", "camfleet")


OWNERS = {("shop", "door"): "a2", ("shop", "gate"): "a1", ("plaza", "door"): "p1"}


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        (f"{R}/shop/door/frame", False),  # a2's camera
        (f"{R}/shop/door/event", False),
        (f"{R}/shop/gate/frame", True),  # its own
        (f"{R}/shop/gate/event", True),
        (f"{R}/shop/yard/frame", True),  # nobody's yet: open to the site's agents until a status claims it
        (f"{R}/shop/agents/a1/status", True),
        (f"{R}/plaza/door/frame", False),  # another site: refused by the rules already
    ],
)
def test_agent_publishes_only_for_cameras_no_other_agent_owns(topic: str, allowed: bool) -> None:
    def owner(site: str, camera: str) -> str | None:
        return OWNERS.get((site, camera))

    assert may_publish(AGENT, topic, "camfleet", owner) is allowed
    hub = MqttPrincipal(MqttRole.HUB, "hub")
    assert may_publish(hub, f"{R}/shop/door/frame", "camfleet", owner)


def test_owned_camera_denies_name_the_other_agents_cameras_of_the_site_only() -> None:
    assert owned_camera_denies(AGENT, "camfleet", OWNERS) == [
        (Access.DENY, f"{R}/shop/door/event"),
        (Access.DENY, f"{R}/shop/door/frame"),
    ]
    observer = MqttPrincipal(MqttRole.OBSERVER, "observer/shop/w", site="shop")
    assert owned_camera_denies(observer, "camfleet", OWNERS) == []
