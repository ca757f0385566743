"""MQTT helpers for tests: a recording subscriber and a one-shot publisher (real paho clients)."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion


class Collector:
    """A real paho subscriber that records every message and waits (bounded) for one that matches."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.topic = topic
        self.seen: list[paho.MQTTMessage] = []
        self._inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-collector-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, _u, _f, rc, _p: c.subscribe(topic, qos=1) if not rc.is_failure else None
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self._inbox.put(msg)
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(30):
            raise RuntimeError(f"could not subscribe to {topic} on {host}:{port}")

    def wait_for(
        self, predicate: Callable[[paho.MQTTMessage], bool], what: str, timeout_s: float = 60.0
    ) -> paho.MQTTMessage:
        """The first message (already seen or arriving) that matches; fails naming `what` on timeout."""
        for msg in self.seen:
            if predicate(msg):
                return msg
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                msg = self._inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(msg)
            if predicate(msg):
                return msg
        topics = sorted({m.topic for m in self.seen})
        pytest.fail(f"no message for {what} within {timeout_s:.0f}s on {self.topic}; saw {len(self.seen)} on {topics}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_publish(host: str, port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    """Publish one QoS 1 message with a throwaway paho client and wait for the broker's ack."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:8]}")
    client.connect(host, port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=30)
    finally:
        client.disconnect()
        client.loop_stop()
