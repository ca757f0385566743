"""The hub's MQTT client: the contract's one paho wrapper (camfleet_contract.mqtt), under the names hub code uses.

The rest of the hub publishes bytes on contract topics and receives ``Received`` messages; it never touches
paho objects. Connected means *the broker accepted us* (CONNACK success), never merely "a socket opened".
"""

from __future__ import annotations

from camfleet_contract.mqtt import (
    RECONNECT_MAX_S,
    RECONNECT_MIN_S,
    Handler,
    MqttClient,
    MqttError,
    MqttSettings,
    Published,
    Received,
    Will,
)

__all__ = [
    "RECONNECT_MAX_S",
    "RECONNECT_MIN_S",
    "Handler",
    "MqttClient",
    "MqttError",
    "MqttSettings",
    "Published",
    "Received",
    "Will",
]
