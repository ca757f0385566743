"""MQTT over TLS on loopback: Mosquitto with a server certificate from a self-signed CA made here. A client that
pins that CA connects and round-trips a message; the agent's own MQTT client (``tls = true``, trusting the CA
through ``SSL_CERT_FILE``) connects; a client pinning another CA, or the system store alone, is refused."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from camfleet_agent.config import MqttSettings
from camfleet_agent.mqtt import AgentMqtt
from camfleet_agent.outbox import Outbox
from tests.support.polling import unique


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(folder: Path, cn: str) -> tuple[Path, Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = folder / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def _server_cert(folder: Path, ca_key: Any, ca_cert: x509.Certificate) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A private Mosquitto with a TLS listener (TLS 1.2+) beside its plain one; yields (broker, tls port, CA path,
    another CA's path)."""
    from bench.common import free_port as unused_port
    from tests.conftest import MosquittoBroker

    folder = tmp_path_factory.mktemp("tls")
    ca_path, ca_key, ca_cert = _ca(folder, "camfleet-test-ca")
    other_ca, _k, _c = _ca(folder, "some-other-ca")
    cert, key = _server_cert(folder, ca_key, ca_cert)
    port = unused_port()
    broker = MosquittoBroker(
        workdir=folder,
        extra_config=[
            f"listener {port} 127.0.0.1",
            f"cafile {ca_path}",
            f"certfile {cert}",
            f"keyfile {key}",
            "tls_version tlsv1.2",
        ],
    )
    broker.start()
    try:
        yield broker, port, ca_path, other_ca
    finally:
        broker.stop()


def _connect(port: int, configure: Callable[[paho.Client], None]) -> tuple[paho.Client, int | None, str]:
    """Connect once; returns the client, the CONNACK code (None: no CONNACK) and any error text."""
    done = threading.Event()
    result: dict[str, Any] = {"rc": None}
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("tls-"))
    configure(client)

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        result["rc"] = int(rc.value if hasattr(rc, "value") else rc)
        done.set()

    client.on_connect = on_connect
    try:
        client.connect("127.0.0.1", port, keepalive=10)
    except (ssl.SSLError, OSError) as exc:
        return client, None, str(exc)
    client.loop_start()
    done.wait(10)
    return client, result["rc"], ""


def test_pinned_ca_connects_and_round_trips(tls_broker: Any) -> None:
    _broker, port, ca, _other = tls_broker
    got = threading.Event()
    topic = f"{unique('tls')}/v1/site-a/cam1/event"
    client, rc, error = _connect(port, lambda c: c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED))
    try:
        assert rc == 0, f"TLS connection with the pinned CA failed: rc={rc} {error}"
        client.on_message = lambda *_a: got.set()
        client.subscribe(topic, qos=1)
        client.publish(topic, b"{}", qos=1).wait_for_publish(10)
        assert got.wait(10), "no message came back over TLS"
    finally:
        client.loop_stop()
        client.disconnect()


def test_another_ca_is_refused(tls_broker: Any) -> None:
    _broker, port, _ca, other = tls_broker
    client, rc, error = _connect(port, lambda c: c.tls_set(ca_certs=str(other), cert_reqs=ssl.CERT_REQUIRED))
    client.loop_stop()
    assert rc is None and "certificate verify failed" in error, (rc, error)


def test_system_store_alone_is_refused(tls_broker: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The agent's ``tls = true`` without the CA in its trust store does not talk to a self-signed broker."""
    _broker, port, _ca, other = tls_broker
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    client, rc, error = _connect(port, lambda c: c.tls_set(cert_reqs=ssl.CERT_REQUIRED))
    client.loop_stop()
    assert rc is None and "certificate verify failed" in error, (rc, error)


def test_plain_client_on_the_tls_port_gets_nothing(tls_broker: Any) -> None:
    _broker, port, _ca, _other = tls_broker
    client, rc, _error = _connect(port, lambda c: None)
    client.loop_stop()
    assert rc is None or rc != 0


def test_agent_client_connects_with_tls(tls_broker: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The edge agent's MQTT client (``[mqtt] tls = true``) trusting the test CA (``SSL_CERT_FILE``) connects."""
    _broker, port, ca, _other = tls_broker
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    settings = MqttSettings(host="localhost", port=port, tls=True, root=unique("tls"))
    agent = AgentMqtt(
        settings,
        site="site-a",
        agent="agent-1",
        status_payload=lambda: b"{}",
        on_model=lambda *_a: None,
        on_command=lambda *_a: None,
        outbox=Outbox(tmp_path / "outbox.db", max_bytes=1 << 20),
    )
    agent.start()
    try:
        assert agent.wait_connected(15), "the agent's TLS client did not connect with the CA in its trust store"
    finally:
        agent.stop()
