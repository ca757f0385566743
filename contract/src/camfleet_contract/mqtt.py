"""The one module that knows paho, for the hub and the agent: settings, connect with back-off, TLS, last-will,
publish and subscribe with typed callbacks.

Callers publish bytes on contract topics and receive `Received` messages; they never touch paho objects. Connected
means *the broker accepted us* (CONNACK success), never merely "a socket opened". Handlers and hooks run on paho's
network thread: keep them short; an exception in one is logged, never raised into paho (it would end the thread).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from camfleet_contract.topics import validate_name

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30  # paho doubles the wait after each failed attempt, up to this


class MqttSettings(BaseModel):
    """How to reach the broker: address, credentials (the password stays secret in logs and reprs), TLS."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    root: str = Field(default="camfleet", min_length=1, description="topic root, e.g. camfleet or plant1/camfleet")
    keepalive: int = Field(default=30, ge=5, le=3600)
    tls: bool = Field(default=False, description="TLS with certificate and host name checks (never insecure)")
    ca_file: Path | None = Field(default=None, description="CA bundle to trust (default: the system store)")
    cert_file: Path | None = Field(default=None, description="client certificate (PEM), with key_file")
    key_file: Path | None = Field(default=None, description="client certificate's private key (PEM)")

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        for part in v.split("/"):
            validate_name(part, "mqtt.root")
        return v

    @model_validator(mode="after")
    def _tls_files(self) -> MqttSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mqtt.cert_file and mqtt.key_file: give both or neither")
        if not self.tls and (self.ca_file or self.cert_file):
            raise ValueError("mqtt.ca_file / mqtt.cert_file are set but mqtt.tls is false")
        return self


@dataclass(frozen=True)
class Received:
    """One incoming MQTT message; ``mid`` and ``qos`` are what ``MqttClient.ack`` needs in manual-ack mode."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    dup: bool = False


@dataclass(frozen=True)
class Will:
    """Last-will message the broker publishes if this client vanishes."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Published:
    """A message handed to the client: `mid` (what `on_publish` reports when the broker acknowledged it),
    `queued` (not connected now: sent after the reconnect) and a bounded wait for the acknowledgement."""

    def __init__(self, info: paho.MQTTMessageInfo) -> None:
        self._info = info
        self.mid: int = info.mid
        self.queued = info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN

    def wait_for_publish(self, timeout: float | None = None) -> None:
        """Wait until the broker acknowledged it (QoS 1); raises RuntimeError/ValueError like paho on failure."""
        self._info.wait_for_publish(timeout)

    def is_published(self) -> bool:
        return self._info.is_published()


Handler = Callable[[Received], None]
ConnectHook = Callable[[bool], None]  # session_present
DisconnectHook = Callable[[str], None]  # the reason
PublishHook = Callable[[int], None]  # mid; runs under paho's message lock: only hand it over


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
    """A paho-mqtt 2.x client (MQTT 3.1.1) with its own network thread and automatic reconnects (back-off
    RECONNECT_MIN_S doubling to RECONNECT_MAX_S).

    Subscriptions are remembered and renewed after every reconnect. ``on_connect`` runs after they were sent.
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
        password: str | SecretStr | None = None,
        keepalive: int = 30,
        clean_session: bool = True,
        manual_ack: bool = False,
        will: Will | None = None,
        tls: MqttSettings | None = None,
        on_connect: ConnectHook | None = None,
        on_disconnect: DisconnectHook | None = None,
        on_publish: PublishHook | None = None,
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
        self._hooks = (on_connect, on_disconnect, on_publish)
        self.connect_count = 0
        self.last_error: str | None = None
        self.subscribed = threading.Event()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=paho.MQTTv311,
            manual_ack=manual_ack,
        )
        if username is not None:
            secret = password.get_secret_value() if isinstance(password, SecretStr) else password
            self._client.username_pw_set(username, secret)
        if tls is not None and tls.tls:
            self._client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            self._client.tls_insecure_set(False)  # the broker's name must match its certificate
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        if on_publish is not None:
            self._client.on_publish = self._on_publish

    @classmethod
    def from_settings(cls, settings: MqttSettings, client_id: str, **options: Any) -> MqttClient:
        """A client for `settings` (address, credentials, TLS); `options` as for the constructor."""
        return cls(
            settings.host,
            settings.port,
            client_id,
            username=settings.username,
            password=settings.password,
            keepalive=settings.keepalive,
            tls=settings,
            **options,
        )

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

    def abort(self) -> None:
        """Drop the connection without a DISCONNECT packet, as a crash would: the broker publishes the will."""
        self._started = False
        self._client.loop_stop()
        sock = self._client.socket()
        if sock is not None:
            sock.close()
        self._connected.clear()

    # ------------------------------------------------------------------ messaging

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> Published:
        """Queue a message; QoS ≥ 1 messages are kept and sent after a reconnect if we are offline now."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise MqttError(f"publish to {topic!r} failed: {paho.error_string(info.rc)}")
        return Published(info)

    def subscribe(self, subscription: str, handler: Handler, qos: int = 1) -> None:
        """Call ``handler`` for every message matching ``subscription`` (renewed after every reconnect)."""
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
        session_present = bool(getattr(flags, "session_present", False))
        log.info(
            "mqtt %s: connected to %s:%s (session present: %s)", self.client_id, self.host, self.port, session_present
        )
        hook = self._hooks[0]
        if hook is not None:
            try:
                hook(session_present)
            except Exception:
                log.exception("mqtt %s: on_connect hook failed", self.client_id)
        self._connected.set()

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
        hook = self._hooks[1]
        if hook is not None and was:
            try:
                hook(str(reason_code))
            except Exception:
                log.exception("mqtt %s: on_disconnect hook failed", self.client_id)

    def _on_publish(self, _client: paho.Client, _userdata: Any, mid: int, _rc: Any, _props: Any) -> None:
        hook = self._hooks[2]
        if hook is not None:
            try:
                hook(mid)
            except Exception:
                log.exception("mqtt %s: on_publish hook failed", self.client_id)

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
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
