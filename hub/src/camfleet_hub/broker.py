"""The embedded MQTT 3.1.1 broker (amqtt), run in its own thread and asyncio loop inside the hub process.

It is the one-command default; production points the hub at Mosquitto (or a cluster) instead. Retained messages
(model announcements, agent statuses) are persisted to a small JSON file by ``RetainedStorePlugin`` so they survive
a hub restart. Not persisted: offline QoS 1 queues of persistent sessions (amqtt keeps them in memory only), and
shared subscriptions (``$share/…``) are not supported by amqtt; use Mosquitto for those.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.broker import Broker, BrokerContext, RetainedApplicationMessage
from amqtt.plugins.base import BasePlugin

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


class RetainedStorePlugin(BasePlugin[BrokerContext]):
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

        broker = EmbeddedBroker("127.0.0.1", 11883, retained_file=Path("var/hub/broker-retained.json"))
        broker.start()   # returns once the port listens
        ...
        broker.stop()
    """

    def __init__(self, host: str, port: int, retained_file: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.retained_file = retained_file
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
        """amqtt configuration: one TCP listener, anonymous access (loopback by default), optional persistence."""
        plugins: dict[str, Any] = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
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
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("embedded broker listens on %s with anonymous access; use Mosquitto with auth", self.host)
        self._thread = threading.Thread(target=self._run, name="embedded-mqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise BrokerStartError(f"embedded broker did not start on {self.host}:{self.port} in {START_TIMEOUT_S}s")
        if self._error is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S)
            self._thread = None
            raise BrokerStartError(
                f"embedded broker could not listen on mqtt.host={self.host!r} mqtt.port={self.port}: {self._error}"
            ) from self._error
        log.info("embedded MQTT broker listening on %s:%s", self.host, self.port)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def boot() -> Broker:
            broker = Broker(self.config(), loop=loop)
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
