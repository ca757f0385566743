"""Exercise the shared fixtures against the real services, so a broken fixture shows up in one place."""

from __future__ import annotations

import queue
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import create_engine, text


def _client(host: str, port: int, received: queue.Queue[tuple[str, bytes]] | None = None) -> mqtt.Client:
    """Connected paho client with its network loop running."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fixture-{uuid.uuid4().hex[:8]}")
    if received is not None:
        client.on_message = lambda _c, _u, msg: received.put((msg.topic, msg.payload))
    client.connect(host, port, keepalive=30)
    client.loop_start()
    return client


def _roundtrip(host: str, port: int, payload: bytes, retain: bool = False) -> tuple[str, bytes]:
    """Subscribe, publish one message at QoS 1 and return what arrives."""
    topic = f"camfleet-test/{uuid.uuid4().hex}"
    received: queue.Queue[tuple[str, bytes]] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    sub = _client(host, port, received)
    sub.on_subscribe = lambda *_args: subscribed.put(True)
    pub = _client(host, port)
    try:
        sub.subscribe(topic, qos=1)
        subscribed.get(timeout=10)
        pub.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=10)
        return received.get(timeout=10)
    finally:
        for client in (sub, pub):
            client.loop_stop()
            client.disconnect()


def test_test_data_is_carried_small_and_licensed(test_data: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    assert test_data == root / "data"  # inside the repository, never ../shared/data
    assert "CC0" in (test_data / "clothing" / "LICENSE").read_text()
    assert (test_data / "video" / "plaza.avi").is_file()
    total = sum(p.stat().st_size for p in test_data.rglob("*") if p.is_file())
    assert total < 5_000_000, f"tests/data is {total} bytes: keep it a few MB"


def test_no_test_reads_the_shared_data_folder() -> None:
    """Tests use the carried data (fixture ``test_data``); ``../shared/data`` is for bench/ only."""
    root = Path(__file__).resolve().parents[1]
    shared_path = re.compile(r"shared/data|\"shared\"\s*/\s*\"data\"|CAMFLEET_TEST_DATA")
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p != Path(__file__).resolve() and shared_path.search(p.read_text())
    ]
    assert offenders == []


def test_carried_clip_decodes(test_data: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    cap = cv2.VideoCapture(str(test_data / "video" / "plaza.avi"))
    frames = 0
    while frames < 1000 and cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 60


def test_clothing_subset_layout(clothing_subset: Path) -> None:
    for split, count in (("train", 20), ("validation", 5)):
        classes = sorted(p.name for p in (clothing_subset / split).iterdir())
        assert classes == ["dress", "hat", "shoes"]
        for cls in classes:
            assert len(list((clothing_subset / split / cls).glob("*.jpg"))) == count


def test_free_port_is_bindable(free_port: Callable[[], int]) -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_mosquitto_pub_sub(mosquitto) -> None:  # type: ignore[no-untyped-def]
    assert _roundtrip(mosquitto.host, mosquitto.port, b"hello")[1] == b"hello"


def test_mosquitto_accepts_large_message(mosquitto) -> None:  # type: ignore[no-untyped-def]
    payload = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    assert _roundtrip(mosquitto.host, mosquitto.port, payload)[1] == payload


def test_private_broker_keeps_retained_across_restart(mosquitto_factory) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto_factory()
    topic = f"camfleet-test/{uuid.uuid4().hex}"
    pub = _client(broker.host, broker.port)
    pub.publish(topic, b"kept", qos=1, retain=True).wait_for_publish(timeout=10)
    pub.loop_stop()
    pub.disconnect()
    broker.restart()
    received: queue.Queue[tuple[str, bytes]] = queue.Queue()
    sub = _client(broker.host, broker.port, received)
    try:
        sub.subscribe(topic, qos=1)
        assert received.get(timeout=10) == (topic, b"kept")
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_pg_url_is_a_fresh_database(pg_url: str) -> None:
    assert pg_url.startswith("postgresql+psycopg2://")
    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            tables = conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar_one()
            assert tables == 0
            conn.execute(text("CREATE TABLE probe (id serial PRIMARY KEY, name text NOT NULL)"))
            conn.execute(text("INSERT INTO probe (name) VALUES ('camfleet')"))
            assert conn.execute(text("SELECT name FROM probe")).scalar_one() == "camfleet"
    finally:
        engine.dispose()


def test_s3_put_get(s3) -> None:  # type: ignore[no-untyped-def]
    bucket = s3.new_bucket()
    assert bucket != s3.new_bucket()
    client = s3.client()
    data = b"\xff\xd8 not really a jpeg"
    client.put_object(Bucket=bucket, Key="blobs/ab/abcdef", Body=data, ContentType="image/jpeg")
    assert client.get_object(Bucket=bucket, Key="blobs/ab/abcdef")["Body"].read() == data
    with pytest.raises(Exception, match="404|Not Found|NoSuchKey"):
        client.head_object(Bucket=bucket, Key="blobs/missing")
