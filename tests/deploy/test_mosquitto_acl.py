"""deploy/mosquitto/acl (the bootstrap ACL, before the first ``mqtt export-mosquitto``) on a real Mosquitto.

It holds only the hub's block, generated from ``comms/acl.RULES``; agents and observers get their own blocks from
the export (tests/deploy/test_mosquitto_export.py). There are no pattern lines, so nobody else reaches anything.

Denied publishes are dropped silently by the broker, so every check publishes the forbidden message first and an
allowed sentinel after it on the same connection: once the sentinel arrives, the forbidden one would have too.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {"hub": "hub-pw", "stranger": "stranger-pw"}  # "stranger": in the password file, no ACL block


@dataclass
class Broker:
    host: str
    port: int


@pytest.fixture
def secured_broker(mosquitto_factory, tmp_path: Path) -> Iterator[Broker]:  # type: ignore[no-untyped-def]
    """A private broker running with the repository's ACL file and a password file for two users."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.fail("mosquitto_passwd not found (apt-get install mosquitto)")
    passwd = tmp_path / "passwd"
    passwd.touch(mode=0o600)
    for user, password in PASSWORDS.items():
        subprocess.run([tool, "-b", str(passwd), user, password], check=True, capture_output=True)
    broker = mosquitto_factory(
        extra_config=[
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {ROOT / 'deploy' / 'mosquitto' / 'acl'}",
        ]
    )
    yield Broker(broker.host, broker.port)


class Client:
    """A paho client (MQTT 3.1.1) that records the CONNACK and the messages it receives."""

    def __init__(self, broker: Broker, user: str | None, password: str | None = None) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[int] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"acl-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv311
        )
        if user is not None:
            self.paho.username_pw_set(user, password if password is not None else PASSWORDS[user])
        self.paho.on_connect = lambda _c, _u, _f, rc, _p: self.connack.put(rc.value)
        self.paho.on_message = lambda _c, _u, msg: self.messages.put((msg.topic, msg.payload))
        self.paho.on_subscribe = lambda _c, _u, _m, rcs, _p: self.subacks.put([rc.value for rc in rcs])
        self.paho.connect(broker.host, broker.port, keepalive=30)
        self.paho.loop_start()
        self.rc = self.connack.get(timeout=10)

    def subscribe(self, *topics: str) -> list[int]:
        self.paho.subscribe([(t, 1) for t in topics])
        return self.subacks.get(timeout=10)

    def publish(self, topic: str, payload: bytes) -> None:
        self.paho.publish(topic, payload, qos=1).wait_for_publish(timeout=10)

    def received_until(self, sentinel: bytes) -> list[tuple[str, bytes]]:
        """Messages received up to and including the one whose payload is ``sentinel``."""
        got = []
        for _ in range(1000):
            message = self.messages.get(timeout=10)
            got.append(message)
            if message[1] == sentinel:
                return got
        raise AssertionError(f"sentinel {sentinel!r} never arrived: {got}")

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.fixture
def clients(secured_broker: Broker) -> Iterator[dict[str, Client]]:
    made = {user: Client(secured_broker, user) for user in PASSWORDS}
    try:
        assert {user: c.rc for user, c in made.items()} == dict.fromkeys(PASSWORDS, 0)
        yield made
    finally:
        for client in made.values():
            client.close()


def test_anonymous_and_wrong_password_are_refused(secured_broker: Broker) -> None:
    for client in (Client(secured_broker, None), Client(secured_broker, "hub", "wrong")):
        try:
            assert client.rc != 0
        finally:
            client.close()


def test_the_hub_reaches_its_topics_and_a_user_without_a_block_nothing(clients: dict[str, Client]) -> None:
    hub, stranger = clients["hub"], clients["stranger"]
    hub.subscribe("camfleet/v1/+/models/+", "camfleet/v1/+/+/frame")
    stranger.subscribe("#")
    stranger.publish("camfleet/v1/plaza/models/door", b"forged model")
    stranger.publish("camfleet/v1/plaza/door/frame", b"forged frame")
    hub.publish("camfleet/v1/plaza/models/door", b"model")
    assert [payload for _, payload in hub.received_until(b"model")] == [b"model"]
    hub.publish("camfleet/v1/plaza/agents/a1/cmd", b"cmd")
    hub.publish("camfleet/v1/plaza/models/door", b"second model")
    assert [payload for _, payload in hub.received_until(b"second model")] == [b"second model"]
    assert stranger.messages.empty()  # nothing the hub sent reached a user without a block


def test_the_bootstrap_acl_has_no_pattern_lines() -> None:
    """Pattern lines apply to every user, the hub's included; each user has its own block instead."""
    lines = (ROOT / "deploy" / "mosquitto" / "acl").read_text().splitlines()
    assert not [line for line in lines if line.startswith("pattern")]
    assert {line.split()[1] for line in lines if line.startswith("user ")} == {"hub"}


def test_the_hub_refuses_reserved_site_names(tmp_path: Path) -> None:
    from camfleet_hub.core.db.session import make_engine, make_sessionmaker, migrate
    from camfleet_hub.core.errors import InvalidError
    from camfleet_hub.datasets import crud

    engine = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        migrate(engine)
        with make_sessionmaker(engine)() as session:
            for name in ("hub", "observer", "Hub"):
                with pytest.raises(InvalidError, match="reserved"):
                    crud.create_site(session, name)
            assert crud.create_site(session, "plaza").name == "plaza"
    finally:
        engine.dispose()
