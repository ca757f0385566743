"""The embedded amqtt broker and the paho wrapper, with real brokers on loopback."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hubcore_helpers import unique, wait_for
from paho.mqtt.enums import CallbackAPIVersion

from camfleet_hub.core.comms.broker import BrokerAccess, BrokerStartError, EmbeddedBroker
from camfleet_hub.core.comms.mqtt import MqttClient, Received

WAIT_S = 10.0
# These tests are about transport, not access (tests/hub/core/test_broker_access.py): loopback anonymous.
OPEN = BrokerAccess("hub", "unused", allow_anonymous_loopback=True)


@pytest.fixture
def broker(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker("127.0.0.1", free_port(), OPEN, retained_file=tmp_path / "retained.json")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def _paho(port: int, client_id: str, on_message: Callable[..., Any] | None = None) -> paho.Client:
    """A plain paho client (what an agent or a third party would use)."""
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
    if on_message is not None:
        client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def test_embedded_broker_publish_subscribe_qos1(broker: EmbeddedBroker) -> None:
    got: queue.Queue[paho.MQTTMessage] = queue.Queue()
    subscribed = threading.Event()
    sub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="sub")
    sub.on_message = lambda _c, _u, msg: got.put(msg)
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    sub.subscribe("camfleet/v1/+/+/event", qos=1)
    assert subscribed.wait(WAIT_S)
    pub = _paho(broker.port, "pub")
    try:
        info = pub.publish("camfleet/v1/shop/cam1/event", b'{"x": 1}', qos=1)
        info.wait_for_publish(WAIT_S)
        assert info.is_published()
        msg = got.get(timeout=WAIT_S)
        assert (msg.topic, msg.payload, msg.qos) == ("camfleet/v1/shop/cam1/event", b'{"x": 1}', 1)
    finally:
        pub.loop_stop()
        sub.loop_stop()
        pub.disconnect()
        sub.disconnect()


def test_retained_message_reaches_late_subscriber_and_survives_restart(broker: EmbeddedBroker) -> None:
    pub = MqttClient("127.0.0.1", broker.port, "announcer")
    assert pub.start(WAIT_S)
    pub.publish("camfleet/v1/shop/models/door", b"v1", qos=1, retain=True).wait_for_publish(WAIT_S)
    pub.publish("camfleet/v1/shop/models/gone", b"old", qos=1, retain=True).wait_for_publish(WAIT_S)
    pub.publish("camfleet/v1/shop/models/gone", b"", qos=1, retain=True).wait_for_publish(WAIT_S)  # clears it
    pub.stop()

    def late_subscriber(name: str) -> list[Received]:
        got: queue.Queue[Received] = queue.Queue()
        client = MqttClient("127.0.0.1", broker.port, name)
        client.subscribe("camfleet/v1/shop/models/+", got.put, qos=1)
        assert client.start(WAIT_S)
        first = got.get(timeout=WAIT_S)
        assert client.subscribed.wait(WAIT_S)
        client.stop()
        rest = []
        while not got.empty():
            rest.append(got.get_nowait())
        return [first, *rest]

    msgs = late_subscriber("late1")
    assert [(m.topic, m.payload, m.retain) for m in msgs] == [("camfleet/v1/shop/models/door", b"v1", True)]

    broker.stop()
    broker.start()  # same port, same retained file
    msgs = late_subscriber("late2")
    assert [(m.topic, m.payload) for m in msgs] == [("camfleet/v1/shop/models/door", b"v1")]


def test_port_in_use_is_a_clear_error(broker: EmbeddedBroker) -> None:
    other = EmbeddedBroker("127.0.0.1", broker.port, OPEN)
    with pytest.raises(BrokerStartError, match=f"mqtt.port={broker.port}"):
        other.start()


def test_client_reconnects_and_resubscribes(mosquitto_factory) -> None:  # type: ignore[no-untyped-def]
    mosq = mosquitto_factory()
    topic = f"{unique('t')}/ping"
    got: queue.Queue[Received] = queue.Queue()
    client = MqttClient(mosq.host, mosq.port, unique("reconn-"))
    client.subscribe(topic, got.put, qos=1)
    assert client.start(WAIT_S)
    assert client.subscribed.wait(WAIT_S)
    try:
        mosq.restart()
        wait_for(lambda: client.connect_count >= 2 and client.subscribed.is_set(), "reconnect + resubscribe")
        pub = MqttClient(mosq.host, mosq.port, unique("pub-"))
        assert pub.start(WAIT_S)
        pub.publish(topic, b"after restart", qos=1).wait_for_publish(WAIT_S)
        pub.stop()
        assert got.get(timeout=WAIT_S).payload == b"after restart"
    finally:
        client.stop()


def test_refused_connection_is_not_marked_connected(tmp_path: Path, free_port: Callable[[], int]) -> None:
    b = EmbeddedBroker("127.0.0.1", free_port(), BrokerAccess("hub", "pw"))  # anonymous is refused
    b.start()
    client = MqttClient("127.0.0.1", b.port, "anonymous-refused")
    try:
        client.start()
        wait_for(lambda: client.last_error is not None, "the broker's refusal")
        assert not client.connected
        assert client.connect_count == 0
    finally:
        client.stop()
        b.stop()


def test_publish_while_broker_down_is_sent_after_connect(tmp_path: Path, free_port: Callable[[], int]) -> None:
    port = free_port()
    client = MqttClient("127.0.0.1", port, "early-publisher")
    client.start()  # nothing listens yet: paho keeps retrying
    client.publish("a/b", b"queued", qos=1, retain=True)  # queued by paho (QoS 1), sent once connected
    b = EmbeddedBroker("127.0.0.1", port, OPEN)
    b.start()
    try:
        assert client.wait_connected(40)
        got: queue.Queue[Received] = queue.Queue()
        sub = MqttClient("127.0.0.1", port, "checker")
        sub.subscribe("a/b", got.put)
        sub.start(WAIT_S)
        assert got.get(timeout=WAIT_S).payload == b"queued"
        sub.stop()
    finally:
        client.stop()
        b.stop()
