"""A paho client for broker-access tests: records its CONNACK, SUBACKs and every message it receives."""

from __future__ import annotations

import queue
import uuid

import paho.mqtt.client as mqtt


class ProbeClient:
    """MQTT 3.1.1 client connected on construction; ``rc`` is the CONNACK reason (0 = accepted)."""

    def __init__(self, port: int, user: str | None, password: str | None, will: tuple[str, bool] | None = None) -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()  # topic, payload, retain
        self.connack: queue.Queue[int] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv311
        )
        if user is not None:
            self.paho.username_pw_set(user, password)
        if will is not None:
            self.paho.will_set(will[0], b"will", qos=1, retain=will[1])
        self.paho.on_connect = lambda _c, _u, _f, rc, _p: self.connack.put(rc.value)
        self.paho.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload), bool(m.retain)))
        self.paho.on_subscribe = lambda _c, _u, _m, rcs, _p: self.subacks.put([rc.value for rc in rcs])
        self.paho.connect("127.0.0.1", port, keepalive=30)
        self.paho.loop_start()
        self.rc = self.connack.get(timeout=15)

    def subscribe(self, *topics: str) -> list[int]:
        self.paho.subscribe([(t, 1) for t in topics])
        return self.subacks.get(timeout=10)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.paho.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=10)

    def payloads_until(self, sentinel: bytes) -> list[bytes]:
        """Payloads received up to and including the first one equal to ``sentinel``."""
        got = []
        for _ in range(1000):
            payload = self.messages.get(timeout=10)[1]
            got.append(payload)
            if payload == sentinel:
                return got
        raise AssertionError(f"sentinel {sentinel!r} never arrived: {got}")

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()
