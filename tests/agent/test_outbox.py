"""The durable outbox: order, persistence, bounded eviction, a full disk; and delivery through a real Mosquitto."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from mqttkit import DurableCollector

from camfleet_agent.config import MqttSettings
from camfleet_agent.mqtt import AgentMqtt, priority_of
from camfleet_agent.outbox import Outbox
from camfleet_contract.envelope import encode_frame, new_header
from camfleet_contract.messages import AgentStatus, to_json


def _frame(rule: str) -> bytes:
    jpeg = b"\xff\xd8" + b"x" * 100
    return encode_frame(new_header("a", "s", "c", jpeg, 10, 10, rule=rule), jpeg)  # type: ignore[arg-type]


def test_rows_come_back_in_order_after_a_crash(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20)
    for i in range(5):
        assert box.put(f"t/{i}/event", f"m{i}".encode(), "event")
    # no close(): a SIGKILLed process never closes; a new process opens the same file
    again = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20)
    items = again.peek(10)
    assert [i.payload for i in items] == [f"m{i}".encode() for i in range(5)]
    assert again.stats().depth == 5 and again.stats().bytes == sum(len(f"t/{i}/event") + 2 for i in range(5))
    again.ack(items[0].id)
    assert [i.payload for i in again.peek(10, after=items[1].id)][0] == b"m2"
    assert again.stats().depth == 4


def test_full_outbox_evicts_sampled_frames_then_frames_then_events(tmp_path: Path) -> None:
    size = 100 + len("t/x")  # every message below is 100 bytes of payload on a 3-character topic
    box = Outbox(tmp_path / "o.sqlite", max_bytes=4 * size)
    assert box.put("t/x", b"S" * 100, "sampled")
    assert box.put("t/x", b"F" * 100, "frame")
    assert box.put("t/x", b"E" * 100, "event")
    assert box.put("t/x", b"s" * 100, "sampled")
    # full: an event evicts the oldest sampled frame, the next event the other sampled one, then the frame
    for _ in range(3):
        assert box.put("t/x", b"e" * 100, "event")
    assert [i.payload[:1] for i in box.peek(10)] == [b"E", b"e", b"e", b"e"]
    # a sampled frame never pushes out an event: it is dropped itself
    assert not box.put("t/x", b"s" * 100, "sampled")
    # a message larger than the whole bound is dropped, and evicts nothing
    assert not box.put("t/x", b"E" * (5 * size), "event")
    assert box.stats().dropped == {
        "outbox_full_sampled": 3,
        "outbox_full_frame": 1,
        "outbox_full_event": 1,
    }
    assert box.stats().depth == 4 and box.stats().bytes == 4 * size


def test_rows_handed_to_the_client_are_never_evicted(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=2 * 103)
    box.put("t/x", b"S" * 100, "sampled")
    first = box.peek(1)[0]
    box.mark_inflight({first.id})
    box.put("t/x", b"T" * 100, "sampled")
    assert box.put("t/x", b"E" * 100, "event")  # evicts T, not the in-flight S
    assert [i.payload[:1] for i in box.peek(10)] == [b"S", b"E"]


def test_a_full_disk_drops_and_counts_instead_of_crashing(tmp_path: Path) -> None:
    # SQLite's page limit fails an insert exactly as a full file system does (SQLITE_FULL)
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 30, file_limit_bytes=64 * 1024)
    results = [box.put("t/x", b"x" * 4000, "event") for _ in range(40)]
    assert results[0] and not results[-1]
    kept = sum(results)
    assert box.stats().dropped == {"disk_error_event": 40 - kept} and box.stats().depth == kept
    assert len(box.peek(100)) == kept  # what was queued is intact


def test_priority_comes_from_the_topic_and_the_frame_rule() -> None:
    assert priority_of("r/v1/s/c/event", b"{}") == "event"
    assert priority_of("r/v1/s/c/frame", _frame("sample")) == "sampled"
    assert priority_of("r/v1/s/c/frame", _frame("anomalous")) == "frame"
    assert priority_of("r/v1/s/c/frame", b"garbage") == "frame"


def test_events_queued_while_the_broker_is_down_arrive_in_order(  # type: ignore[no-untyped-def]
    mosquitto_factory, tmp_path: Path
) -> None:
    broker = mosquitto_factory()
    site = f"s{uuid.uuid4().hex[:8]}"
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20)
    status = to_json(AgentStatus(state="online", agent="a1", site=site))
    mqtt = AgentMqtt(
        MqttSettings(host=broker.host, port=broker.port, keepalive=5),
        site,
        "a1",
        status_payload=lambda: status,
        on_model=lambda *_: None,
        on_command=lambda _p: None,
        outbox=box,
    )
    mqtt.start()
    try:
        assert mqtt.wait_connected(30)
        seen = DurableCollector(broker.host, broker.port, f"camfleet/v1/{site}/+/event")
        topic = f"camfleet/v1/{site}/cam/event"
        assert mqtt.publish(topic, b'{"n": 0}')
        seen.drain(lambda got: len(got) == 1, "the first event", 30)
        broker.stop()
        deadline = time.monotonic() + 30
        while mqtt.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not mqtt.connected.is_set()
        for n in range(1, 51):
            assert mqtt.publish(topic, json.dumps({"n": n}).encode())
        assert box.stats().depth >= 50  # on disk, not in memory
        broker.start()
        seen.reconnect()
        msgs = seen.drain(lambda got: len(got) == 50, "the 50 queued events", 60)
        assert [json.loads(m.payload)["n"] for m in msgs] == list(range(1, 51))  # all, once each, in order
        deadline = time.monotonic() + 30
        while box.stats().depth and time.monotonic() < deadline:
            time.sleep(0.05)
        assert box.stats().depth == 0 and box.stats().bytes == 0
        assert mqtt.reconnects == 1
        seen.close()
    finally:
        mqtt.stop()
        box.close()
