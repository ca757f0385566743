"""Ingest throughput: frames/s stored by the hub (object + row, QoS 1, through Mosquitto) ÷ the raw broker rate.

The raw baseline is a paho publisher and subscriber moving the same payloads with no work, in the same run.
    python bench/ingest.py [--frames 2000]
    python bench/ingest.py --smoke     # a few seconds on the tests' carried clip: does it still run
    python bench/ingest.py --events 20000 [--db-url postgresql://...]   # events stored (event history) ÷ raw
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import REPO, clip_frames, free_port, mosquitto, wait_port  # noqa: E402

from camfleet_contract.envelope import encode_frame, new_header  # noqa: E402
from camfleet_contract.images import encode_jpeg  # noqa: E402
from camfleet_contract.messages import Event, Prediction, to_json  # noqa: E402
from camfleet_contract.topics import Topics  # noqa: E402

SITE, CAMERA, AGENT = "bench", "plaza", "bench-agent"
SMOKE_CLIP = REPO / "tests" / "data" / "video" / "plaza.avi"


def admin_token(cfg: Path) -> str:
    """An every-site admin token made by the hub's CLI on the bench hub's database (the API needs a caller)."""
    done = subprocess.run(
        [sys.executable, "-m", "camfleet_hub", "token", "create", "--config", str(cfg), "--name", "bench",
         "--role", "admin"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"camfleet-hub token create failed: {done.stderr[-1000:]}")
    return done.stdout.strip().splitlines()[-1]


def make_jpegs(count: int, target_kb: int = 64) -> list[tuple[bytes, int, int]]:
    """Distinct 1280x720 frames of the clip as JPEGs of about 60 KB (the best quality under target_kb)."""
    out = []
    for rgb in clip_frames(count):
        q, jpeg = 80, b""
        while q > 20:
            jpeg = encode_jpeg(rgb, q)
            if len(jpeg) <= target_kb * 1024:
                break
            q -= 5
        out.append((jpeg, rgb.shape[1], rgb.shape[0]))
    return out


def payloads(jpegs: list[tuple[bytes, int, int]], n: int) -> list[bytes]:
    return [
        encode_frame(new_header(AGENT, SITE, CAMERA, j, w, h), j)
        for j, w, h in (jpegs[i % len(jpegs)] for i in range(n))
    ]


def publish_all(port: int, topic: str, msgs: list[bytes]) -> float:
    """Publish QoS 1 as fast as the broker acknowledges; returns the start time."""
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
    pub.max_inflight_messages_set(100)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    start = time.perf_counter()
    infos = [pub.publish(topic, m, qos=1) for m in msgs]
    for info in infos:
        info.wait_for_publish(timeout=120)
    pub.loop_stop()
    pub.disconnect()
    return start


def raw_rate(port: int, topic: str, msgs: list[bytes]) -> float:
    done, count = threading.Event(), [0]
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-raw-sub")

    def on_message(*_: object) -> None:
        count[0] += 1
        if count[0] == len(msgs):
            done.set()

    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    time.sleep(0.5)
    start = publish_all(port, topic, msgs)
    done.wait(300)
    elapsed = time.perf_counter() - start
    sub.loop_stop()
    sub.disconnect()
    return count[0] / elapsed


def event_payloads(n: int) -> list[bytes]:
    """Small JSON events (two predictions), as an agent publishes one per frame and classifier."""
    preds = [Prediction(label="open", probability=0.8), Prediction(label="closed", probability=0.2)]
    return [
        to_json(
            Event(frame_id=f"f{i}", site=SITE, camera=CAMERA, agent=AGENT, classifier="door", model_version="1",
                  label="open", probability=0.8, predictions=preds, anomaly=i % 50 == 0, anomaly_score=0.1,
                  motion=0.05, latency_ms=3.0)
        )
        for i in range(n)
    ]  # fmt: skip


def _events_stored(api: httpx.Client) -> tuple[int, dict]:
    """Events stored and messages rejected so far, from the hub's /metrics."""
    text = api.get("/metrics").text
    stored = rejected = 0.0
    for line in text.splitlines():
        if line.startswith("camfleet_hub_ingest_events_total "):
            stored = float(line.split()[-1])
        elif line.startswith("camfleet_hub_ingest_rejected_total{"):
            rejected += float(line.split()[-1])
    return int(stored), {"events": int(stored), "rejected": int(rejected)}


def hub_rate(
    port: int, topic: str, msgs: list[bytes], tmp: Path, events: bool = False, db_url: str | None = None
) -> tuple[float, dict]:
    http = free_port()
    cfg = tmp / "hub.toml"
    cfg.write_text(
        f'data_dir = "{tmp / "hub"}"\n[http]\nport = {http}\n[mqtt]\nembedded = false\nport = {port}\n'
        f'client_id = "bench-hub"\n[ingest]\nbatch_size = 128\nqueue_size = 4096\n'
        '[auth]\nadmin_password = "bench-admin-password"\n' + (f'[db]\nurl = "{db_url}"\n' if db_url else "")
    )
    token = admin_token(cfg)
    log = open(tmp / "hub.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "camfleet_hub", "serve", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_port(http, 120)
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{http}", timeout=30, headers={"Authorization": f"Bearer {token}"}
        )
        api.post("/api/v1/sites", json={"name": SITE}).raise_for_status()
        api.post(f"/api/v1/sites/{SITE}/cameras", json={"name": CAMERA}).raise_for_status()
        time.sleep(1.0)
        start = publish_all(port, topic, msgs)
        deadline = time.monotonic() + 600
        stats: dict = {}
        while events and time.monotonic() < deadline:
            stored, stats = _events_stored(api)
            if stored + stats["rejected"] >= len(msgs):
                break
            time.sleep(0.1)
        if events:
            return stats["events"] / (time.perf_counter() - start), stats
        while time.monotonic() < deadline:
            r = api.get("/api/v1/ingest/stats")
            if r.status_code != 200:
                raise SystemExit(f"GET /ingest/stats answered {r.status_code}: {r.text[:300]}")
            stats = r.json()
            if int(stats.get("frames", 0)) + int(stats.get("dead_letters", 0)) >= len(msgs):
                break
            time.sleep(0.1)
        elapsed = time.perf_counter() - start
        return int(stats.get("frames", 0)) / elapsed, stats
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--smoke", action="store_true", help="100 frames of the tests' carried clip")
    ap.add_argument("--events", type=int, default=0, help="events mode: this many small JSON events instead")
    ap.add_argument("--db-url", default=None, help="the hub's database (default: SQLite in a temp folder)")
    args = ap.parse_args()
    if args.events:
        msgs = event_payloads(args.events)
        topic = Topics().event(SITE, CAMERA)
        with mosquitto() as port:
            raw = raw_rate(port, topic, msgs)
            with tempfile.TemporaryDirectory() as tmp:
                hub, stats = hub_rate(port, topic, msgs, Path(tmp), events=True, db_url=args.db_url)
        db = "PostgreSQL" if args.db_url and args.db_url.startswith("postgres") else "SQLite"
        print(f"events: {args.events} x {len(msgs[0])} B JSON (QoS 1, Mosquitto on loopback)")
        print(f"raw broker rate (paho pub -> paho sub, no work): {raw:8.0f} events/s")
        print(f"hub event history (row + ack, {db}):        {hub:8.0f} events/s   stats: {stats}")
        print(f"ratio hub / raw: {hub / raw:.2f}   (target >= 0.5)")
        return
    if args.smoke:
        common.CLIP, args.frames = SMOKE_CLIP, 100  # clip_frames reads common.CLIP
    jpegs = make_jpegs(min(args.frames, 300))
    size = sum(len(j) for j, _, _ in jpegs) / len(jpegs) / 1024
    topic = Topics().frame(SITE, CAMERA)
    with mosquitto() as port:
        raw = raw_rate(port, topic, payloads(jpegs, args.frames))
        with tempfile.TemporaryDirectory() as tmp:
            hub, stats = hub_rate(port, topic, payloads(jpegs, args.frames), Path(tmp))
    print(f"frames: {args.frames} x {size:.0f} KB JPEG (QoS 1, Mosquitto on loopback)")
    print(f"raw broker rate (paho pub -> paho sub, no work): {raw:8.0f} frames/s")
    print(f"hub ingest (object + row + ack, SQLite + dir):    {hub:8.0f} frames/s   stats: {stats}")
    print(f"ratio hub / raw: {hub / raw:.2f}   (target >= 0.5)")


if __name__ == "__main__":
    main()
