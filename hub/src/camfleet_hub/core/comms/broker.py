"""The embedded MQTT 3.1.1 broker (amqtt), run in its own thread and asyncio loop inside the hub process.

It is the one-command default; production points the hub at Mosquitto (or a cluster) instead. Retained messages
(model announcements, agent statuses) are persisted to a small JSON file by ``RetainedStorePlugin`` so they survive
a hub restart. Not persisted: offline QoS 1 queues of persistent sessions (amqtt keeps them in memory only), and
shared subscriptions (``$share/…``) are not supported by amqtt; use Mosquitto for those.

Access (``BrokerAccess``): ``CamfleetAuthPlugin`` admits the hub's own user and the MQTT accounts the hub issued
(anonymous only from loopback, and only when allowed); ``CamfleetTopicPlugin`` applies the topic rules of
``camfleet_hub.core.comms.acl`` to every subscribe, publish and delivery (an agent's frames and events only for cameras
no other agent owns, from ``BrokerAccess.owners``); ``_CamfleetBroker`` keeps a retained message
only where the sender may retain (amqtt has no plugin hook that sees the retain flag).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from amqtt.broker import Broker, BrokerContext, RetainedApplicationMessage
from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin
from amqtt.session import Session

from camfleet_contract.topics import DEFAULT_ROOT
from camfleet_hub.core.comms.acl import (
    MqttPrincipal,
    MqttRole,
    OwnerLookup,
    may_publish,
    may_receive,
    may_retain,
    may_subscribe,
)

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0


class BrokerStartError(RuntimeError):
    """The embedded broker could not listen (port taken, bad address...)."""


def _read_retained(path: Path) -> dict[str, tuple[bytes, int]]:
    """Load ``{topic: (payload, qos)}`` from the retained-message file; a damaged file is logged and ignored."""
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {item["topic"]: (base64.b64decode(item["data"]), int(item["qos"])) for item in raw}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("embedded broker: ignoring unreadable retained-message file %s (%s)", path, exc)
        return {}


def _write_retained(path: Path, messages: dict[str, tuple[bytes, int]]) -> None:
    """Rewrite the retained-message file atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    items = [
        {"topic": t, "data": base64.b64encode(d).decode("ascii"), "qos": q} for t, (d, q) in sorted(messages.items())
    ]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".retained-")
    with os.fdopen(fd, "w") as fh:
        json.dump(items, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# (username, password) -> the account's principal, or None when unknown, revoked or the password is wrong.
Verifier = Callable[[str, str], MqttPrincipal | None]
PRINCIPAL_KEY = "camfleet_principal"


class CameraOwners(Protocol):
    """Who owns each camera, answered from memory (``owner``) and re-read off the event loop (``refresh_if_stale``)."""

    def stale(self) -> bool: ...

    def refresh_if_stale(self) -> None: ...

    def owner(self, site: str, camera: str) -> str | None: ...


@dataclass(frozen=True)
class BrokerAccess:
    """Who the embedded broker lets in: the hub's own user, issued accounts (``verify``), maybe loopback anonymous."""

    hub_username: str
    hub_password: str
    verify: Verifier | None = None
    allow_anonymous_loopback: bool = False
    root: str = DEFAULT_ROOT
    owners: CameraOwners | None = None  # None: no ownership check (every agent of a site writes all its cameras)

    def principal(self, username: str | None, password: str | None, address: str | None) -> MqttPrincipal | None:
        """The principal for a CONNECT's credentials and source address, or None to refuse it."""
        if username is None:
            if self.allow_anonymous_loopback and _is_loopback(address):
                return MqttPrincipal(MqttRole.ANONYMOUS, "")
            return None
        if password is None:
            return None
        if username == self.hub_username:
            ok = hmac.compare_digest(password.encode(), self.hub_password.encode())
            return MqttPrincipal(MqttRole.HUB, username) if ok else None
        return self.verify(username, password) if self.verify is not None else None


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


# amqtt builds plugins from plain config values, so each broker's BrokerAccess is found through a random key.
_ACCESS: dict[str, BrokerAccess] = {}


def _principal_of(session: Session | None) -> MqttPrincipal | None:
    found = session.attributes.get(PRINCIPAL_KEY) if session is not None else None
    return found if isinstance(found, MqttPrincipal) else None


async def _owner_lookup(owners: CameraOwners | None) -> OwnerLookup | None:
    """The camera owners, re-read in a worker thread when older than their TTL (never a query per PUBLISH)."""
    if owners is None:
        return None
    if owners.stale():
        await asyncio.to_thread(owners.refresh_if_stale)
    return owners.owner


async def _will_allowed(access: BrokerAccess, principal: MqttPrincipal, session: Session) -> bool:
    """May ``principal`` publish its last-will now (and retain it, when asked)? Asked at CONNECT and again when the
    will would be sent: the will's camera may have got another owner in between."""
    topic = session.will_topic
    if topic is None:
        return True
    owner = await _owner_lookup(access.owners) if principal.role is MqttRole.AGENT else None
    return may_publish(principal, topic, access.root, owner) and (
        not session.will_retain or may_retain(principal, topic, access.root)
    )


class CamfleetAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt auth plugin: credentials for every client; a last-will the client may not publish refuses the CONNECT."""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._access = _ACCESS[self.config.access_key]

    async def authenticate(self, *, session: Session) -> bool | None:
        access = self._access
        password = session.password
        if isinstance(password, bytes | bytearray):
            password = bytes(password).decode("utf-8", errors="replace")
        # Account look-ups hash and query SQL: off the broker's event loop.
        principal = await asyncio.to_thread(access.principal, session.username, password, session.remote_address)
        who = f"client {session.client_id!r} user {session.username!r} from {session.remote_address}"
        if principal is None:
            log.warning("embedded broker: refused %s: unknown user, wrong password or anonymous", who)
            return False
        if session.will_flag and not await _will_allowed(access, principal, session):
            log.warning("embedded broker: refused %s: last-will on %r not allowed", who, session.will_topic)
            return False
        session.attributes[PRINCIPAL_KEY] = principal
        return True

    @dataclass
    class Config:
        """The key of this broker's ``BrokerAccess``."""

        access_key: str = ""


class CamfleetTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt topic plugin: the rules of ``camfleet_hub.core.comms.acl`` for subscribe, publish and delivery."""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        access = _ACCESS[self.config.access_key]
        self._root = access.root
        self._owners = access.owners

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        principal = _principal_of(session)
        if principal is None or topic is None:
            return False
        if action == Action.PUBLISH:
            owner = await _owner_lookup(self._owners) if principal.role is MqttRole.AGENT else None
            allowed = may_publish(principal, topic, self._root, owner)
        elif action == Action.SUBSCRIBE:
            allowed = may_subscribe(principal, topic, self._root)
        else:
            allowed = may_receive(principal, topic, self._root)
        if not allowed:
            log.warning(
                "embedded broker: %s of %r refused for %s user %r", action, topic, principal.role, principal.username
            )
        return allowed

    @dataclass
    class Config:
        """The key of this broker's ``BrokerAccess``."""

        access_key: str = ""


class _CamfleetBroker(Broker):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt's broker, keeping a retained message only where its sender may retain (agents: their own status), and
    sending a last-will only where its client may still publish it."""

    def __init__(self, config: dict[str, Any], loop: asyncio.AbstractEventLoop, access: BrokerAccess) -> None:
        super().__init__(config, loop=loop)
        self._access = access

    async def _handle_disconnect(
        self, client_session: Session, handler: Any, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        # amqtt sends the will without its topic filter; the owners it was checked against at CONNECT may be stale
        if client_session.will_flag:
            principal = _principal_of(client_session)
            if principal is None or not await _will_allowed(self._access, principal, client_session):
                log.warning(
                    "embedded broker: last-will of client %r on %r not sent: no longer allowed",
                    client_session.client_id,
                    client_session.will_topic,
                )
                client_session.will_flag = False
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    async def retain_message(
        self,
        source_session: Session | None,
        topic_name: str | None,
        data: bytes | bytearray | None,
        qos: int | None = None,
    ) -> None:
        principal = _principal_of(source_session)
        if source_session is not None and topic_name is not None:
            if principal is None or not may_retain(principal, topic_name, self._access.root):
                log.warning("embedded broker: not retaining %r from client %r", topic_name, source_session.client_id)
                return
        await super().retain_message(source_session, topic_name, data, qos)


class RetainedStorePlugin(BasePlugin[BrokerContext]):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt plugin: keeps retained messages in a JSON file and restores them when the broker starts."""

    def __init__(self, context: BrokerContext) -> None:
        super().__init__(context)
        self._path = Path(self.config.file)
        self._messages: dict[str, tuple[bytes, int]] = {}

    async def on_broker_post_start(self) -> None:
        """Put the persisted retained messages back into the broker."""
        self._messages = _read_retained(self._path)
        for topic, (data, qos) in self._messages.items():
            self.context.retained_messages[topic] = RetainedApplicationMessage(None, topic, data, qos)
        if self._messages:
            log.info("embedded broker: restored %d retained messages", len(self._messages))

    async def on_broker_retained_message(
        self, *, client_id: str | None, retained_message: RetainedApplicationMessage
    ) -> None:
        """Record a new or cleared retained message (``client_id`` set means a per-session copy: skip)."""
        if client_id is not None:
            return
        topic = retained_message.topic
        if retained_message.data:
            self._messages[topic] = (bytes(retained_message.data), int(retained_message.qos or 0))
        elif self._messages.pop(topic, None) is None:
            return
        _write_retained(self._path, self._messages)

    @dataclass
    class Config:
        """Where the retained messages are kept."""

        file: str = "broker-retained.json"


class EmbeddedBroker:
    """amqtt on ``host:port`` in a daemon thread with its own event loop.

    Example::

        access = BrokerAccess("hub", hub_password, verify=accounts.verify)
        broker = EmbeddedBroker("127.0.0.1", 11883, access, retained_file=Path("var/hub/broker-retained.json"))
        broker.start()   # returns once the port listens
        ...
        broker.stop()
    """

    def __init__(self, host: str, port: int, access: BrokerAccess, retained_file: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.access = access
        self.retained_file = retained_file
        self._access_key = secrets.token_hex(8)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Broker | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"EmbeddedBroker({self.host}:{self.port}, running={self.running})"

    @property
    def running(self) -> bool:
        """True between a successful start and stop."""
        return self._thread is not None and self._thread.is_alive() and self._broker is not None

    def config(self) -> dict[str, Any]:
        """amqtt configuration: one TCP listener, camfleet's auth and topic plugins, optional persistence."""
        plugins: dict[str, Any] = {
            f"{__name__}.CamfleetAuthPlugin": {"access_key": self._access_key},
            f"{__name__}.CamfleetTopicPlugin": {"access_key": self._access_key},
        }
        if self.retained_file is not None:
            plugins[f"{__name__}.RetainedStorePlugin"] = {"file": str(self.retained_file)}
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": plugins,
        }

    def start(self) -> None:
        """Start the broker thread and wait until it listens; raises BrokerStartError otherwise."""
        if self._thread is not None:
            return
        _ACCESS[self._access_key] = self.access
        self._thread = threading.Thread(target=self._run, name="embedded-mqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise BrokerStartError(f"embedded broker did not start on {self.host}:{self.port} in {START_TIMEOUT_S}s")
        if self._error is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S)
            self._thread = None
            _ACCESS.pop(self._access_key, None)
            raise BrokerStartError(
                f"embedded broker could not listen on mqtt.host={self.host!r} mqtt.port={self.port}: {self._error}"
            ) from self._error
        log.info("embedded MQTT broker listening on %s:%s", self.host, self.port)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def boot() -> Broker:
            broker = _CamfleetBroker(self.config(), loop, self.access)
            await broker.start()
            return broker

        try:
            self._broker = loop.run_until_complete(boot())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def stop(self) -> None:
        """Shut the broker down (clients see a disconnect) and end its thread."""
        thread, loop, broker = self._thread, self._loop, self._broker
        if thread is None or loop is None:
            _ACCESS.pop(self._access_key, None)
            return
        if broker is not None and not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
            try:
                future.result(timeout=STOP_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - stopping must not raise
                log.warning("embedded broker shutdown: %s", exc)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=STOP_TIMEOUT_S)
        self._thread = None
        self._broker = None
        self._loop = None
        self._ready.clear()
        _ACCESS.pop(self._access_key, None)
