"""Commands from the hub: validated with the contract's models, run one at a time off the MQTT thread, answered.

Every command gets a `CommandReply` on the agent's reply topic, an unreadable or hostile one too (with the
`command_id` when one could be read), so the hub never waits on silence and no payload can crash the agent.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from camfleet_contract.messages import Command, CommandReply, MessageError, from_json, utcnow

log = logging.getLogger(__name__)

QUEUE_SIZE = 32
_ID_MAX = 64


class CommandFailed(Exception):
    """A command was understood but could not be carried out; the message goes into the error reply."""


class CommandTarget(Protocol):
    """What commands act on (the Agent); each returns a short message for the reply or raises CommandFailed."""

    def snapshot(self, camera: str | None) -> str: ...

    def reload(self) -> str: ...

    def restart_camera(self, camera: str) -> str: ...

    def config_version(self) -> int | None: ...


class CommandRunner:
    """Receives raw command payloads (on paho's thread: quick), runs them on its own thread, replies."""

    def __init__(self, agent: str, target: CommandTarget, reply: Callable[[CommandReply], None]) -> None:
        self.agent = agent
        self.target = target
        self._reply = reply
        self._queue: queue.Queue[Command | Callable[[], None] | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self.handled: dict[str, int] = {"ok": 0, "error": 0}
        self.clock_skew_s = 0.0  # our clock minus the hub's, from the last command's timestamp

    def defer(self, work: Callable[[], None]) -> bool:
        """Run slow work from the MQTT thread (applying settings) on the command thread; False when full."""
        try:
            self._queue.put_nowait(work)
        except queue.Full:
            log.error("command queue full: deferred work dropped")
            return False
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="commands", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=1.0)
        except queue.Full:
            pass
        self._thread.join(timeout=15)
        self._thread = None

    def submit(self, payload: bytes) -> None:
        """Validate a payload from the cmd topic; refuse it with an error reply when it is not a valid command."""
        try:
            command = from_json(Command, payload)
        except MessageError as exc:
            log.warning("command refused: %s", exc)
            self._answer(_readable_id(payload), _readable_name(payload), "error", str(exc))
            return
        try:
            self._queue.put_nowait(command)
        except queue.Full:
            self._answer(command.command_id, command.command, "error", f"agent busy: {QUEUE_SIZE} commands waiting")

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, Command):
                self.run(item)
                continue
            try:
                item()
            except Exception:
                log.exception("deferred work failed")

    def run(self, command: Command) -> CommandReply:
        """Carry out one command and send its reply (also returned, for tests and the CLI)."""
        self.clock_skew_s = (utcnow() - command.ts).total_seconds()
        try:
            message = self._dispatch(command)
            result = "ok"
        except CommandFailed as exc:
            message, result = str(exc), "error"
        except Exception as exc:  # a bug in a command must not kill the command thread
            log.exception("command %s (%s) failed", command.command, command.command_id)
            message, result = f"internal error: {type(exc).__name__}: {exc}", "error"
        log.info("command %s (%s): %s %s", command.command, command.command_id, result, message)
        return self._answer(command.command_id, command.command, result, message)

    def _dispatch(self, command: Command) -> str:
        t = self.target
        if command.command == "snapshot":
            return t.snapshot(command.camera)
        if command.command == "reload":
            return t.reload()
        if command.command == "restart":
            if command.camera is None:
                raise CommandFailed("restart: camera is required (which camera to reopen)")
            return t.restart_camera(command.camera)
        version = t.config_version()
        return f"config version {version}" if version is not None else "no hub settings applied yet"

    def _answer(self, command_id: str | None, name: str | None, result: str, message: str) -> CommandReply:
        reply = CommandReply(
            command_id=command_id,
            command=name,
            agent=self.agent,
            result="ok" if result == "ok" else "error",
            message=message[:2000],
        )
        self.handled[reply.result] += 1
        try:
            self._reply(reply)
        except Exception:
            log.exception("could not send the reply to command %s", command_id)
        return reply


def _readable(payload: bytes, key: str) -> str | None:
    """A short, safe string field of a payload that failed validation (to address the error reply)."""
    try:
        data = json.loads(payload[: 256 * 1024])
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    value = data.get(key) if isinstance(data, dict) else None
    if isinstance(value, str) and 0 < len(value) <= _ID_MAX and all(c.isalnum() or c in "_.:-" for c in value):
        return value
    return None


def _readable_id(payload: bytes) -> str | None:
    return _readable(payload, "command_id")


def _readable_name(payload: bytes) -> str | None:
    return _readable(payload, "command")
