"""The agent's MQTT connection over the contract's paho wrapper: topics, last-will, the durable outbox."""

from __future__ import annotations

import json
import logging
import queue
import struct
import threading
import time
from collections.abc import Callable
from typing import Protocol

from camfleet_contract.envelope import PREFIX_SIZE
from camfleet_contract.messages import AgentStatus, MessageError, ModelAnnouncement, from_json, to_json
from camfleet_contract.mqtt import MqttClient, MqttError, Received, Will
from camfleet_contract.topics import TopicError, Topics

from . import __version__
from .config import MqttSettings
from .outbox import Outbox, Priority

log = logging.getLogger(__name__)
_HEAD_LEN = struct.Struct(">I")

SEND_WINDOW = 100  # outbox rows handed to the client and not yet acknowledged (paho's own queue is unbounded)
STOP_FLUSH_S = 5.0

ModelHandler = Callable[[str, ModelAnnouncement | None], None]
RawHandler = Callable[[bytes], None]
"""Commands and config messages are handed over raw: their handlers validate and answer (a reply, a log)."""


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
        on_command: RawHandler,
        outbox: Outbox,
        on_config: RawHandler | None = None,
    ) -> None:
        self.settings = settings
        self.site = site
        self.agent = agent
        self.topics = Topics(settings.root)
        self.status_topic = self.topics.status(site, agent)
        self._status_payload = status_payload
        self._on_model = on_model
        self._on_command = on_command
        self._on_config = on_config
        self.outbox = outbox
        self.connected = threading.Event()
        # A stable client id + clean_session=False: the broker keeps our subscriptions and queued commands
        # while we are away, and paho resends QoS 1 messages that were in flight when the link dropped.
        self.client_id = settings.client_id or f"camfleet-agent-{site}-{agent}"
        self.connects = 0
        self.disconnects = 0
        self._stopping = False
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._inflight: dict[int, int] = {}  # paho mid → outbox row id (sender thread only)
        # The last row handed to paho: rows go out in id order, so each round reads only the rows after it.
        self._handed = 0
        self._sender_stop = threading.Event()
        self._sender: threading.Thread | None = None
        self._client = self._build_client()

    @property
    def reconnects(self) -> int:
        """Successful connections after the first one."""
        return max(0, self.connects - 1)

    def _build_client(self) -> MqttClient:
        will = AgentStatus(state="offline", agent=self.agent, site=self.site, software_version=__version__)
        settings = self.settings
        if not settings.username:  # an empty name means anonymous
            settings = settings.model_copy(update={"username": None})
        client = MqttClient.from_settings(
            settings,
            self.client_id,
            clean_session=False,
            will=Will(self.status_topic, to_json(will), qos=1, retain=True),
            on_connect=self._handle_connect,
            on_disconnect=self._handle_disconnect,
            on_publish=self._handle_publish,
        )
        for subscription in (
            self.topics.models_subscription(self.site),
            self.topics.cmd(self.site, self.agent),
            self.topics.config(self.site, self.agent),
        ):
            client.subscribe(subscription, self._handle_message, qos=1)
        return client

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting with backoff until stop()."""
        s = self.settings
        log.info("mqtt: connecting to %s:%d as %s", s.host, s.port, self.client_id)
        self._client.start()
        self._sender_stop.clear()
        self._sender = threading.Thread(target=self._send_loop, name="outbox-sender", daemon=True)
        self._sender.start()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def stop(self, offline_payload: bytes | None = None) -> None:
        """Publish the offline status (retained) when connected, then disconnect cleanly."""
        self._stopping = True
        self._stop_sender(flush_s=STOP_FLUSH_S if self.connected.is_set() else 0.0)
        if offline_payload is not None and self.connected.is_set():
            try:
                self._client.publish(self.status_topic, offline_payload, qos=1, retain=True).wait_for_publish(
                    timeout=STOP_FLUSH_S
                )
            except (MqttError, RuntimeError, ValueError) as exc:
                log.warning("mqtt: offline status not confirmed: %s", exc)
        self._client.stop()
        self.connected.clear()

    def abort(self) -> None:
        """Drop the connection without a DISCONNECT packet, as a crash would: the broker publishes the will."""
        self._stopping = True
        self._stop_sender(flush_s=0.0)
        self._client.abort()
        self.connected.clear()

    # ------------------------------------------------------------------ outgoing

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Events and frames go through the durable outbox; False when it had to drop the message.

        Retained or QoS 0 messages (status) are state, not history: they go straight to paho.
        """
        if qos == 1 and not retain and topic.endswith(("/event", "/frame")):
            return self.outbox.put(topic, payload, priority_of(topic, payload))
        return self.publish_direct(topic, payload, qos, retain)

    def publish_direct(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Hand a message to the client now (replies, status); False when it refused it."""
        try:
            self._client.publish(topic, payload, qos=qos, retain=retain)
        except MqttError as exc:
            log.warning("mqtt: %s", exc)
            return False
        return True

    # ------------------------------------------------------------------ client callbacks (the network thread)

    def _handle_connect(self, session_present: bool) -> None:
        """Accepted by the broker (subscriptions already renewed): announce ourselves, let the outbox drain."""
        self.connects += 1
        try:
            self._client.publish(self.status_topic, self._status_payload(), qos=1, retain=True)
        except Exception:  # a status bug must not stop the connection's other work
            log.exception("mqtt: could not publish the online status")
        self.connected.set()
        self.outbox.changed.set()  # wake the sender: the queue drains now

    def _handle_disconnect(self, reason: str) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected:
            self.disconnects += 1
        if not self._stopping and was_connected:
            log.warning("mqtt: connection lost (%s); reconnecting", reason)

    def _handle_message(self, message: Received) -> None:
        self._dispatch(message.topic, message.payload)

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
            self._on_model(parsed.classifier, announcement.for_agent(self.agent))  # the rollout plan's pick
        elif parsed.kind == "cmd" and parsed.agent == self.agent:
            self._on_command(payload)
        elif parsed.kind == "config" and parsed.agent == self.agent and self._on_config is not None:
            if payload:
                self._on_config(payload)
        else:
            log.warning("mqtt: ignoring unexpected message on %s", topic)

    # ------------------------------------------------------------------ outbox sender

    def _handle_publish(self, mid: int) -> None:
        # Runs under paho's message lock: only hand the ack over (taking our locks here could deadlock).
        self._acks.put(mid)
        self.outbox.changed.set()

    def _send_loop(self) -> None:
        """Hand outbox rows to paho in order while connected; delete each one when the broker acknowledges it."""
        while not self._sender_stop.is_set():
            self.outbox.changed.wait(0.5)
            self.outbox.changed.clear()
            try:
                self._take_acks()
                if self.connected.is_set():
                    self._send_some()
            except Exception:  # a bug here must not stop delivery for good
                log.exception("mqtt: outbox sender failed; retrying")
                self._sender_stop.wait(1.0)

    def _take_acks(self) -> None:
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                return
            row_id = self._inflight.pop(mid, None)
            if row_id is not None:
                self.outbox.ack(row_id)

    def _send_some(self) -> None:
        room = SEND_WINDOW - len(self._inflight)
        if room <= 0:
            return
        for item in self.outbox.peek(room, after=self._handed):
            try:
                sent = self._client.publish(item.topic, item.payload, qos=item.qos)
            except MqttError as exc:
                log.warning("mqtt: an outbox message was refused: %s", exc)
                break
            self._inflight[sent.mid] = item.id
            self._handed = item.id
            if sent.queued:
                break  # queued in paho (it resends at reconnect); wait for the connection before sending more
        self.outbox.mark_inflight(set(self._inflight.values()))
        if len(self._inflight) < SEND_WINDOW and self.outbox.stats().depth > len(self._inflight):
            self.outbox.changed.set()  # more to send: go round again

    def _stop_sender(self, flush_s: float) -> None:
        """Stop the sender, first waiting up to `flush_s` for the broker to acknowledge what is queued."""
        deadline = time.monotonic() + flush_s
        while flush_s > 0 and time.monotonic() < deadline and self.outbox.stats().depth > 0:
            time.sleep(0.05)
        self._sender_stop.set()
        self.outbox.changed.set()
        if self._sender is not None:
            self._sender.join(timeout=10)
            self._sender = None


def priority_of(topic: str, payload: bytes) -> Priority:
    """Eviction class of an outgoing message: events are kept longest, sampled frames go first."""
    if topic.endswith("/event"):
        return "event"
    try:
        (head_len,) = _HEAD_LEN.unpack_from(payload, 4)
        header = json.loads(payload[PREFIX_SIZE : PREFIX_SIZE + head_len])
        rule = header.get("rule") or header.get("reason")
    except (ValueError, struct.error, AttributeError):
        return "frame"
    return "sampled" if rule == "sample" else "frame"
