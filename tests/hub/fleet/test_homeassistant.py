"""Home Assistant MQTT discovery on the real Mosquitto: the retained discovery payloads validate against Home
Assistant's documented configuration variables for MQTT `sensor` and `binary_sensor`; states are retained and
published on change only; availability follows the agent's status; switching a site off removes its entities."""

from __future__ import annotations

import json

import jsonschema
import pytest
from fleethelpers import API, FleetHub, unique, wait_for

from camfleet_hub.core.comms.mqtt import MqttClient, Received

# Home Assistant's documented options (https://www.home-assistant.io/integrations/sensor.mqtt/ and
# .../binary_sensor.mqtt/, "Configuration Variables"), typed as documented; anything else is refused.
_AVAILABILITY = {
    "availability_topic": {"type": "string"},
    "availability_template": {"type": "string"},
    "availability_mode": {"enum": ["all", "any", "latest"]},
    "payload_available": {"type": "string"},
    "payload_not_available": {"type": "string"},
    "availability": {"type": "array"},
}
_DEVICE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "identifiers": {"type": ["array", "string"], "items": {"type": "string"}},
        "connections": {"type": "array"},
        "name": {"type": "string"},
        "manufacturer": {"type": "string"},
        "model": {"type": "string"},
        "model_id": {"type": "string"},
        "hw_version": {"type": "string"},
        "sw_version": {"type": "string"},
        "serial_number": {"type": "string"},
        "suggested_area": {"type": "string"},
        "configuration_url": {"type": "string"},
        "via_device": {"type": "string"},
    },
}
_COMMON = {
    **_AVAILABILITY,
    "device": _DEVICE,
    "origin": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "sw_version": {"type": "string"}, "support_url": {"type": "string"}},
    },
    "enabled_by_default": {"type": "boolean"},
    "encoding": {"type": "string"},
    "entity_category": {"enum": ["config", "diagnostic"]},
    "entity_picture": {"type": "string"},
    "expire_after": {"type": "integer", "minimum": 0},
    "force_update": {"type": "boolean"},
    "icon": {"type": "string"},
    "json_attributes_template": {"type": "string"},
    "json_attributes_topic": {"type": "string"},
    "name": {"type": ["string", "null"]},
    "object_id": {"type": "string"},
    "default_entity_id": {"type": "string"},
    "platform": {"const": "mqtt"},
    "qos": {"enum": [0, 1, 2]},
    "state_topic": {"type": "string"},
    "unique_id": {"type": "string"},
    "value_template": {"type": "string"},
}
SENSOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["state_topic"],
    "properties": {
        **_COMMON,
        "device_class": {"type": ["string", "null"]},
        "last_reset_value_template": {"type": "string"},
        "options": {"type": "array"},
        "suggested_display_precision": {"type": "integer"},
        "state_class": {"enum": ["measurement", "total", "total_increasing"]},
        "unit_of_measurement": {"type": "string"},
    },
}
BINARY_SENSOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["state_topic"],
    "properties": {
        **_COMMON,
        "device_class": {"enum": ["problem", "motion", "occupancy", "door", "opening", "presence", "safety", None]},
        "off_delay": {"type": "integer", "minimum": 0},
        "payload_on": {"type": "string"},
        "payload_off": {"type": "string"},
    },
}


class Watcher:
    """A subscriber that keeps every message on the topics it follows (as Home Assistant would see them)."""

    def __init__(self, fleet: FleetHub, *subscriptions: str) -> None:
        self.got: list[Received] = []
        self.client = MqttClient(fleet.mosquitto.host, fleet.mosquitto.port, unique("ha-"))
        for sub in subscriptions:
            self.client.subscribe(sub, self.got.append, qos=1)
        assert self.client.start(30)
        wait_for(lambda: self.client.subscribed.is_set(), "the watcher's subscription")

    def on(self, topic: str) -> list[bytes]:
        return [m.payload for m in list(self.got) if m.topic == topic]


@pytest.fixture
def site() -> str:
    return unique("ha")


def test_discovery_states_and_switch(sqlite_fleet: FleetHub, site: str) -> None:
    fleet = sqlite_fleet
    fleet.site(site, ("cam1",))
    oid = f"camfleet_{site}_cam1_door"
    state = f"{fleet.topics.prefix}/{site}/cam1/state/door"
    sensor_topic, binary_topic = (
        f"homeassistant/sensor/{oid}/config",
        f"homeassistant/binary_sensor/{oid}_anomaly/config",
    )
    w = Watcher(fleet, f"homeassistant/+/{oid}/config", f"homeassistant/+/{oid}_anomaly/config", state)
    try:
        for label, anomaly in [("open", False), ("open", False), ("open", False), ("closed", False), ("closed", True)]:
            fleet.event(site=site, label=label, anomaly=anomaly)
        wait_for(lambda: len(w.on(state)) == 3, "three state changes")
        sensor = json.loads(wait_for(lambda: w.on(sensor_topic), "the sensor config")[0])
        binary = json.loads(wait_for(lambda: w.on(binary_topic), "the binary sensor config")[0])
        jsonschema.validate(sensor, SENSOR_SCHEMA)
        jsonschema.validate(binary, BINARY_SENSOR_SCHEMA)
        assert sensor["state_topic"] == state == binary["state_topic"]
        assert sensor["unique_id"] != binary["unique_id"]
        assert sensor["availability_topic"] == fleet.topics.status(site, "agent1")
        assert sensor["device"]["identifiers"] == binary["device"]["identifiers"]
        states = [json.loads(p) for p in w.on(state)]
        assert [(s["label"], s["anomaly"]) for s in states] == [("open", False), ("closed", False), ("closed", True)]
        assert states[0]["probability"] == 0.9 and "model_version" in states[0]
        assert fleet.services.fleet is not None and fleet.services.fleet.homeassistant.published_states == 3
    finally:
        w.client.stop()

    # A late subscriber (Home Assistant restarting) gets the configs and the last state, retained.
    late = Watcher(fleet, f"homeassistant/+/{oid}/config", state)
    try:
        wait_for(lambda: late.on(sensor_topic) and late.on(state), "retained config and state")
        assert json.loads(late.on(state)[-1])["anomaly"] is True
        assert all(m.retain for m in late.got)
    finally:
        late.client.stop()

    # Switched off: the entities go (empty retained configs) and no more states are published.
    w2 = Watcher(fleet, f"homeassistant/+/{oid}/config")
    try:
        r = fleet.client.patch(f"{API}/sites/{site}/fleet-settings", json={"homeassistant": False})
        assert r.status_code == 200 and r.json()["homeassistant"] is False
        wait_for(lambda: b"" in w2.on(sensor_topic), "the sensor config removed")
        fleet.event(site=site, label="open")
        wait_for(lambda: fleet.stats().events == 6, "the sixth event stored")
        assert fleet.services.fleet.homeassistant.published_states == 3
    finally:
        w2.client.stop()


def test_template_helpers_validate_for_every_name() -> None:
    from camfleet_hub.fleet.homeassistant import entity

    e = entity("camfleet/v1", "my-site.1", "cam_2", "door.state", "agent-x")
    jsonschema.validate(e.sensor, SENSOR_SCHEMA)
    jsonschema.validate(e.binary, BINARY_SENSOR_SCHEMA)
    assert "/" not in e.sensor["unique_id"] and "." not in e.sensor["unique_id"]
    assert e.sensor_topic.count("/") == 3 and e.binary_topic.startswith("homeassistant/binary_sensor/")
