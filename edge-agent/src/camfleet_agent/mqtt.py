"""The agent's MQTT connection: the one module that knows paho, topics, last-will and reconnects."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from camfleet_contract.messages import AgentStatus, Command, MessageError, ModelAnnouncement, from_json, to_json
from camfleet_contract.topics import TopicError, Topics

from . import __version__
from .config import MqttSettings

log = logging.getLogger(__name__)

MAX_QUEUED_MESSAGES = 1000  # QoS 1 messages paho keeps while the broker is away (the durable outbox comes later)
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
STOP_FLUSH_S = 5.0

ModelHandler = Callable[[str, ModelAnnouncement | None], None]
CommandHandler = Callable[[Command], None]


class Publisher(Protocol):
    """What the pipeline needs from a transport."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool: ...


class AgentMqtt:
    """Connects with a retained last-will, announces itself on every (re)connect, dispatches typed messages.

    Handlers run on paho's network thread: they must be quick (hand work to a queue).
    """

    def __init__(
        self,
        settings: MqttSettings,
        site: str,
        agent: str,
        status_payload: Callable[[], bytes],
        on_model: ModelHandler,
        on_command: CommandHandler,
    ) -> None:
        self.settings = settings
        self.site = site
        self.agent = agent
        self.topics = Topics(settings.root)
        self.status_topic = self.topics.status(site, agent)
        self._status_payload = status_payload
        self._on_model = on_model
        self._on_command = on_command
        self.connected = threading.Event()
        self.client_id = settings.client_id or f"camfleet-agent-{site}-{agent}"
        self._stopping = False
        self._client = self._build_client()

    def _build_client(self) -> paho.Client:
        s = self.settings
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        if s.username:
            client.username_pw_set(s.username, s.password.get_secret_value() if s.password else None)
        if s.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        will = AgentStatus(state="offline", agent=self.agent, site=self.site, software_version=__version__)
        client.will_set(self.status_topic, to_json(will), qos=1, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        return client

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting with backoff until stop()."""
        s = self.settings
        log.info("mqtt: connecting to %s:%d as %s", s.host, s.port, self.client_id)
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def stop(self, offline_payload: bytes | None = None) -> None:
        """Publish the offline status (retained) when connected, then disconnect cleanly."""
        self._stopping = True
        if offline_payload is not None and self.connected.is_set():
            info = self._client.publish(self.status_topic, offline_payload, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=STOP_FLUSH_S)
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt: offline status not confirmed: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    def abort(self) -> None:
        """Drop the connection without a DISCONNECT packet, as a crash would: the broker publishes the will."""
        self._stopping = True
        self._client.loop_stop()
        sock = self._client.socket()
        if sock is not None:
            sock.close()
        self.connected.clear()

    # ------------------------------------------------------------------ outgoing

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue a message; False when paho refused it (queue full). QoS 1 survives a reconnect."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("mqtt: publish to %s refused: %s", topic, paho.error_string(info.rc))
            return False
        return True

    # ------------------------------------------------------------------ paho callbacks

    def _handle_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            log.error("mqtt: broker refused the connection: %s", reason_code)
            return
        log.info("mqtt: connected to %s:%d", self.settings.host, self.settings.port)
        try:
            client.publish(self.status_topic, self._status_payload(), qos=1, retain=True)
        except Exception:  # a status bug must not stop the subscriptions
            log.exception("mqtt: could not publish the online status")
        client.subscribe([(self.topics.models_subscription(self.site), 1), (self.topics.cmd(self.site, self.agent), 1)])
        self.connected.set()

    def _handle_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason_code: Any, _props: Any
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if not self._stopping and was_connected:
            log.warning("mqtt: connection lost (%s); reconnecting", reason_code)

    def _handle_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            self._dispatch(msg.topic, bytes(msg.payload))
        except Exception:  # never let a handler bug kill paho's network thread
            log.exception("mqtt: handler failed for a message on %s", msg.topic)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        try:
            parsed = self.topics.parse(topic)
        except TopicError as exc:
            log.warning("mqtt: ignoring message: %s", exc)
            return
        if parsed.site != self.site:
            log.warning("mqtt: ignoring message on %s: site %r is not ours (%r)", topic, parsed.site, self.site)
            return
        if parsed.kind == "model" and parsed.classifier is not None:
            if not payload:
                log.info("mqtt: classifier %s removed by the hub", parsed.classifier)
                self._on_model(parsed.classifier, None)
                return
            try:
                announcement = from_json(ModelAnnouncement, payload)
            except MessageError as exc:
                log.warning("mqtt: ignoring malformed model announcement on %s: %s", topic, exc)
                return
            if announcement.classifier != parsed.classifier:
                log.warning(
                    "mqtt: ignoring model announcement on %s: it names classifier %r",
                    topic,
                    announcement.classifier,
                )
                return
            self._on_model(parsed.classifier, announcement)
        elif parsed.kind == "cmd" and parsed.agent == self.agent:
            try:
                command = from_json(Command, payload)
            except MessageError as exc:
                log.warning("mqtt: ignoring malformed command on %s: %s", topic, exc)
                return
            self._on_command(command)
        else:
            log.warning("mqtt: ignoring unexpected message on %s", topic)
