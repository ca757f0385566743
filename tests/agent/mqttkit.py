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


class DurableCollector:
    """A subscriber with a persistent session (fixed client id, clean_session=False): what the broker queued for
    it while it, or the broker, was away arrives when it reconnects. `reconnect()` after a broker restart."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.client_id = f"test-durable-{uuid.uuid4().hex[:8]}"
        self.inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._subscribed = threading.Event()
        self.client = self._connect()

    def _connect(self) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False)
        client.on_connect = lambda c, _u, _f, rc, _p: c.subscribe(self.topic, qos=1) if not rc.is_failure else None
        client.on_subscribe = lambda *_a: self._subscribed.set()
        client.on_message = lambda _c, _u, msg: self.inbox.put(msg)
        client.reconnect_delay_set(1, 2)
        client.connect(self.host, self.port)
        client.loop_start()
        if not self._subscribed.wait(30):
            raise RuntimeError(f"could not subscribe to {self.topic} on {self.host}:{self.port}")
        return client

    def reconnect(self, timeout_s: float = 30) -> None:
        """After a broker restart: paho reconnects by itself and the persistent session resumes; wait for that.

        A second client with the same id would take the session over mid-delivery, and every message the first
        one had received but not yet acknowledged would arrive again.
        """
        deadline = time.monotonic() + timeout_s
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                pytest.fail(f"the subscriber did not reconnect to {self.host}:{self.port} within {timeout_s:.0f}s")
            time.sleep(0.1)

    def drain(
        self, until: Callable[[list[paho.MQTTMessage]], bool], what: str, timeout_s: float
    ) -> list[paho.MQTTMessage]:
        """Collect messages until `until(all so far)` holds; fails naming `what` on timeout."""
        got: list[paho.MQTTMessage] = []
        deadline = time.monotonic() + timeout_s
        while not until(got):
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout_s:.0f}s ({len(got)} messages on {self.topic})")
            try:
                got.append(self.inbox.get(timeout=0.2))
            except queue.Empty:
                continue
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
