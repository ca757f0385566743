"""A broker outage and an agent SIGKILLed in the middle of it: every queued event and frame arrives once, by id.

A real Mosquitto, a real agent process (`camfleet-agent run`) with 4 image-folder cameras at 2 frames/s, every
frame classified (gate off) and every second frame uploaded (rule `sample`). The broker is stopped for 30 s;
10 s into the outage the agent is killed with SIGKILL and started again (the broker still down); then the
broker comes back. The ground truth is every row the agent ever wrote to its outbox: an SQLite trigger the
test adds copies each insert into a journal table, in the agent's own transaction. Every one of those ids
must reach a persistent-session subscriber. QoS 1 is at-least-once, so two kinds of second copy are allowed,
and the hub drops both by id (tests/hub/core/test_ingest.py, tests/hub/fleet/test_events.py): the broker's own
retransmission to the subscriber after its restart (flagged DUP), and the agent resending a message the broker
held unacknowledged when it went down. Any other second copy is the agent sending twice, and fails the test.
Figures go to docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "agent"))  # the agent tests' bundle and MQTT helpers

from bundles import announcement_for, bundle_zip  # noqa: E402
from mqttkit import DurableCollector, mqtt_publish  # noqa: E402

from camfleet_agent.outbox import Outbox  # noqa: E402
from camfleet_contract.envelope import decode_frame  # noqa: E402
from camfleet_contract.signing import generate_signing_key, public_key_of  # noqa: E402
from camfleet_contract.topics import Topics  # noqa: E402
from tests.support.polling import wait_for

CAMERAS = 4
FPS = 2
OUTAGE_S = 30.0
KILL_AFTER_S = 10.0
CLF = "clothes"

JOURNAL = """
CREATE TABLE journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, payload BLOB);
CREATE TRIGGER journal_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO journal (topic, payload) VALUES (NEW.topic, NEW.payload);
END;
"""


def message_id(topic: str, payload: bytes) -> tuple[str, str]:
    if topic.endswith("/event"):
        return ("event", json.loads(payload)["event_id"])
    header, _ = decode_frame(payload)
    return ("frame", header.frame_id)


def read_db(path: Path, table: str) -> list[tuple[str, str]]:
    db = sqlite3.connect(str(path), timeout=30)
    try:
        return [message_id(t, bytes(p)) for t, p in db.execute(f"SELECT topic, payload FROM {table} ORDER BY 1")]
    finally:
        db.close()


def test_outage_and_sigkill_lose_nothing_queued(mosquitto_factory, test_data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto_factory()
    site = f"out{uuid.uuid4().hex[:6]}"
    seed = generate_signing_key()

    # the hub's download side: a bundle and the fleet key on a loopback HTTP server
    www = tmp_path / "www"
    (www / "bundles").mkdir(parents=True)
    (www / "api/v1/keys").mkdir(parents=True)
    (www / "api/v1/keys/fleet").write_text(json.dumps({"public_key": public_key_of(seed)}))
    data = bundle_zip(seed, classifier=CLF, version="1", site=site)
    (www / "bundles/b.zip").write_bytes(data)
    quiet = type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *_a: None})
    http = ThreadingHTTPServer(("127.0.0.1", 0), partial(quiet, directory=str(www)))
    threading.Thread(target=http.serve_forever, args=(0.1,), daemon=True).start()
    ann = announcement_for(data, "/bundles/b.zip", CLF, "1")
    mqtt_publish(broker.host, broker.port, Topics().model(site, CLF), ann.model_dump_json().encode(), retain=True)

    cameras = []
    for i in range(CAMERAS):
        folder = tmp_path / f"cam{i}"
        folder.mkdir()
        for cls in ("dress", "hat", "shoes"):
            src = sorted((test_data / "clothing" / "train" / cls).glob("*.jpg"))[i]
            shutil.copyfile(src, folder / f"{cls}.jpg")
        cameras.append(
            f'[[cameras]]\nname = "cam{i}"\nsource = "{folder}"\nfps = {FPS}\nupload_interval_s = 0\n'
            '[cameras.gate]\nenabled = false\n[[cameras.uploads]]\nrule = "sample"\nevery_n = 2\n'
        )
    data_dir = tmp_path / "agent"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'agent = "edge-out"\nsite = "{site}"\nhub_url = "http://127.0.0.1:{http.server_address[1]}"\n'
        f'data_dir = "{data_dir}"\nfleet_public_key = "{public_key_of(seed)}"\nstatus_interval_s = 5\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nkeepalive = 5\n[health]\nport = 0\n\n'
        + "\n".join(cameras)
    )
    outbox = data_dir / "outbox.sqlite"
    Outbox(outbox, max_bytes=1 << 30).close()  # the agent's schema, then the test's journal trigger
    db = sqlite3.connect(str(outbox))
    db.executescript(JOURNAL)
    db.close()

    sub = DurableCollector(broker.host, broker.port, f"camfleet/v1/{site}/+/+")
    received: list[tuple[str, str]] = []
    retransmitted: list[tuple[str, str]] = []  # copies the broker flagged DUP

    def take(timeout_s: float = 0.2) -> None:
        for msg in sub.drain(lambda got: sub.inbox.empty(), "messages", timeout_s + 30):
            if msg.topic.endswith(("/event", "/frame")):
                (retransmitted if msg.dup else received).append(message_id(msg.topic, bytes(msg.payload)))

    def arrived() -> set[tuple[str, str]]:
        return set(received + retransmitted)

    logs = []

    def start_agent(n: int) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"agent{n}.log", "wb")  # noqa: SIM115 - closed at the end of the test
        logs.append(log)
        cmd = [sys.executable, "-m", "camfleet_agent", "run", "--config", str(config)]
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    agent = start_agent(1)
    second: subprocess.Popen[bytes] | None = None
    try:
        # connected: events and frames flow
        def flowing() -> bool:
            take()
            kinds = Counter(k for k, _ in received)
            return kinds["event"] >= 2 * CAMERAS and kinds["frame"] >= CAMERAS

        wait_for(flowing, "events and frames from every camera", 60)

        broker.stop()
        outage_start = time.monotonic()
        unacked_at_stop = set(read_db(outbox, "outbox"))  # what the broker may have taken without acknowledging
        time.sleep(KILL_AFTER_S)
        agent.send_signal(signal.SIGKILL)
        agent.wait(30)
        queued_at_kill = read_db(outbox, "outbox")
        assert len(queued_at_kill) >= CAMERAS * FPS * (KILL_AFTER_S - 3), "the outage should have queued messages"
        second = start_agent(2)  # the broker is still away: it queues on top of what the first one left
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_start)))
        broker.start()
        outage_s = time.monotonic() - outage_start
        back = time.monotonic()
        sub.reconnect()

        def drained() -> bool:
            take()
            return not read_db(outbox, "outbox")

        wait_for(drained, "the outbox drained after the broker came back", 60)
        drain_s = time.monotonic() - back
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
        journal = read_db(outbox, "journal")
        wait_for(lambda: (take(), set(journal) <= arrived())[1], "every journaled id at the subscriber", 30)
    finally:
        for proc in (agent, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(30)
        for log in logs:
            log.close()
        sub.close()
        http.shutdown()

    counts = Counter(received)
    resent_by_agent = {mid for mid, n in counts.items() if n > 1 and mid in unacked_at_stop}
    sent_twice = {mid for mid, n in counts.items() if n > 1 and mid not in unacked_at_stop}
    missing = set(journal) - arrived()
    figures = {
        "events": sum(1 for k, _ in set(journal) if k == "event"),
        "frames": sum(1 for k, _ in set(journal) if k == "frame"),
        "queued_at_kill": len(queued_at_kill),
        "outage_s": round(outage_s, 1),
        "drain_s": round(drain_s, 1),
        "missing": len(missing),
        "unacked_at_stop": len(unacked_at_stop),
        "broker_retransmissions": len(retransmitted),
        "resent_unacked": len(resent_by_agent),
        "sent_twice": len(sent_twice),
        "unexpected": len(arrived() - set(journal)),
    }
    print("outage figures:", json.dumps(figures))
    assert not missing
    assert set(queued_at_kill) <= arrived()
    assert figures["unexpected"] == 0
    assert not sent_twice, f"{len(sent_twice)} ids were sent twice by the agent"
