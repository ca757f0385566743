"""The one module that knows paho: connect with automatic reconnect, publish, subscribe with handlers.

The rest of the hub publishes bytes on contract topics and receives ``Received`` messages; it never touches
paho objects. Connected means *the broker accepted us* (CONNACK success), never merely "a socket opened".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30


@dataclass(frozen=True)
class Received:
    """One incoming MQTT message; ``mid`` and ``qos`` are what ``MqttClient.ack`` needs in manual-ack mode."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    dup: bool = False


Handler = Callable[[Received], None]


@dataclass(frozen=True)
class Will:
    """Last-will message the broker publishes if this client vanishes."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _filter_of(subscription: str) -> str:
    """The topic filter inside a ``$share/<group>/<filter>`` subscription (or the subscription itself)."""
    if subscription.startswith("$share/"):
        parts = subscription.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return subscription


class MqttError(RuntimeError):
    """A publish or subscribe the client could not hand to paho."""


class MqttClient:
    """A paho-mqtt 2.x client (MQTT 3.1.1) with its own network thread and automatic reconnects.

    Example::

        client = MqttClient("127.0.0.1", 1883, "camfleet-hub")
        client.subscribe("camfleet/v1/+/+/event", lambda msg: print(msg.topic))
        client.start()
        client.publish("camfleet/v1/shop/models/door", b"{...}", qos=1, retain=True)
        client.stop()
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
        clean_session: bool = True,
        manual_ack: bool = False,
        will: Will | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.keepalive = keepalive
        self._subs: dict[str, tuple[int, Handler]] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._started = False
        self._manual_ack = manual_ack
        self.connect_count = 0
        self.last_error: str | None = None
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=paho.MQTTv311,
            manual_ack=manual_ack,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self.subscribed = threading.Event()

    def __repr__(self) -> str:
        return f"MqttClient({self.client_id!r} @ {self.host}:{self.port}, connected={self.connected})"

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        """True while the broker has accepted our connection."""
        return self._connected.is_set()

    def start(self, wait_s: float | None = None) -> bool:
        """Start the network thread and connect (retrying forever in the background); optionally wait."""
        if not self._started:
            self._started = True
            self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
            self._client.loop_start()
        if wait_s is not None:
            return self.wait_connected(wait_s)
        return self.connected

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected or ``timeout_s`` passes; tells which."""
        return self._connected.wait(timeout_s)

    def stop(self) -> None:
        """Disconnect cleanly (no last-will) and stop the network thread."""
        if not self._started:
            return
        self._started = False
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self._connected.clear()

    # ------------------------------------------------------------------ messaging

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        """Queue a message; QoS ≥ 1 messages are kept and sent after a reconnect if we are offline now."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise MqttError(f"publish to {topic!r} failed: {paho.error_string(info.rc)}")
        return info

    def subscribe(self, subscription: str, handler: Handler, qos: int = 1) -> None:
        """Call ``handler`` (on the network thread: keep it short) for every message matching ``subscription``.

        Subscriptions are remembered and renewed after every reconnect.
        """
        with self._lock:
            self._subs[subscription] = (qos, handler)
        if self.connected:
            self._client.subscribe(subscription, qos=qos)

    def unsubscribe(self, subscription: str) -> None:
        """Stop receiving ``subscription``."""
        with self._lock:
            self._subs.pop(subscription, None)
        if self.connected:
            self._client.unsubscribe(subscription)

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a message in manual-ack mode (PUBACK for QoS 1); a no-op for QoS 0."""
        if qos > 0:
            self._client.ack(mid, qos)

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(
        self, client: paho.Client, _userdata: Any, flags: Any, reason_code: ReasonCode, _props: Any
    ) -> None:
        if reason_code.is_failure:
            # Refused (bad credentials, not authorised...): stay disconnected; paho keeps retrying.
            self.last_error = str(reason_code)
            self._connected.clear()
            log.warning(
                "mqtt %s: broker %s:%s refused the connection: %s", self.client_id, self.host, self.port, reason_code
            )
            return
        with self._lock:
            subs = list(self._subs.items())
        if subs:
            client.subscribe([(topic, qos) for topic, (qos, _h) in subs])
        self.connect_count += 1
        self.last_error = None
        self._connected.set()
        log.info(
            "mqtt %s: connected to %s:%s (session present: %s)",
            self.client_id,
            self.host,
            self.port,
            getattr(flags, "session_present", None),
        )

    def _on_subscribe(
        self, _client: paho.Client, _userdata: Any, mid: int, codes: list[ReasonCode], _props: Any
    ) -> None:
        failed = [str(c) for c in codes if c.is_failure]
        if failed:
            log.warning("mqtt %s: broker refused subscription %s: %s", self.client_id, mid, ", ".join(failed))
            return
        self.subscribed.set()
        log.info("mqtt %s: subscribed (granted %s)", self.client_id, ", ".join(str(c) for c in codes))

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason_code: ReasonCode, _props: Any
    ) -> None:
        was = self.connected
        self._connected.clear()
        self.subscribed.clear()
        if was and self._started:
            log.warning(
                "mqtt %s: disconnected from %s:%s (%s); reconnecting", self.client_id, self.host, self.port, reason_code
            )

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        # Never let an exception escape into paho: it would end the network thread.
        try:
            topic = bytes(message._topic).decode("utf-8", errors="replace")
            received = Received(
                topic=topic,
                payload=bytes(message.payload),
                qos=message.qos,
                retain=bool(message.retain),
                mid=message.mid,
                dup=bool(message.dup),
            )
            with self._lock:
                handlers = [h for sub, (_q, h) in self._subs.items() if paho.topic_matches_sub(_filter_of(sub), topic)]
            if not handlers:
                log.debug("mqtt %s: no handler for %s", self.client_id, topic)
                if self._manual_ack:
                    self.ack(received.mid, received.qos)
                return
            for handler in handlers:
                try:
                    handler(received)
                except Exception:
                    log.exception("mqtt %s: handler for %s failed", self.client_id, topic)
        except Exception:
            log.exception("mqtt %s: could not dispatch a message", self.client_id)
