"""Fleet simulation: how many cameras one hub ingest process holds. N simulated agents (asyncio, one process, one
MQTT connection each) send 1 event/s per camera plus a frame every --frame-every events (an upload-by-rule
stand-in), through Mosquitto into one ``camfleet-hub ingest`` on PostgreSQL + S3 (SeaweedFS; --s3 moto for the
emulator). N grows step by
step (--ladder); each step reports the p99 ingest lag of events and frames, and the largest N whose p99 stays under
--target-s is the answer.

    python bench/fleet_sim.py --ladder 50,100,200,400,800 --step-s 30
    python bench/fleet_sim.py --smoke        # two small steps of a few seconds

Lag: frames by their row (received_at - captured_at). Events have no receive time in their table, so a sampler
counts the stored events every 0.1 s: event i is stored by the first sample whose count exceeds i (one process
commits in arrival order), and its lag is that sample's time minus its send time (an upper bound within 0.1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from bisect import bisect_right
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simfleet import (  # noqa: E402
    S3_SERVERS,
    SITE,
    AsyncPublisher,
    Services,
    clip_jpegs,
    percentile,
    services,
    unique_jpeg,
)

from camfleet_contract.envelope import encode_frame, new_header  # noqa: E402
from camfleet_contract.images import probe_image  # noqa: E402
from camfleet_contract.messages import Event, Prediction, to_json  # noqa: E402
from camfleet_contract.topics import Topics  # noqa: E402

SAMPLE_S = 0.1


def event_template(camera: str) -> dict[str, object]:
    preds = [Prediction(label="empty", probability=0.9), Prediction(label="busy", probability=0.1)]
    event = Event(frame_id="f", site=SITE, camera=camera, agent=camera, classifier="bay", model_version="3",
                  label="empty", probability=0.9, predictions=preds, anomaly=False, anomaly_score=0.1,
                  latency_ms=12.0)  # fmt: skip
    return json.loads(to_json(event))


class Step:
    """What one ladder step sent, in order, with send times (seconds on the monotonic clock)."""

    def __init__(self) -> None:
        self.event_sent: list[float] = []
        self.frames = 0
        self.late = 0


async def camera(
    n: int, port: int, jpegs: list[bytes], dims: list[tuple[int, int]], until: float, every: int, step: Step
) -> None:
    name = f"sim-{n:04d}"
    pub = AsyncPublisher("127.0.0.1", port, f"{name}-{uuid.uuid4().hex[:6]}")
    await pub.connect()
    topics = Topics()
    template = event_template(name)
    start, k = time.monotonic() + (n % 100) / 100, 0  # spread the cameras over the second
    try:
        while True:
            due = start + k
            if due >= until:
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -1.0:
                step.late += 1
            fid = uuid.uuid4().hex
            if every and k % every == 0:
                i = (n + k) % len(jpegs)
                jpeg = unique_jpeg(jpegs[i], fid)
                header = new_header(name, SITE, name, jpeg, *dims[i]).model_copy(update={"frame_id": fid})
                await pub.publish(topics.frame(SITE, name), encode_frame(header, jpeg))
                step.frames += 1
            body = dict(template, event_id=uuid.uuid4().hex, frame_id=fid)
            body["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
            step.event_sent.append(time.monotonic())
            await pub.publish(topics.event(SITE, name), json.dumps(body).encode())
            k += 1
    finally:
        await pub.close()


def _counter(svc: Services):  # type: ignore[no-untyped-def]
    import psycopg2

    conn = psycopg2.connect(svc.db_url.replace("postgresql+psycopg2://", "postgresql://", 1))
    conn.autocommit = True
    return conn


def _count(conn, table: str) -> int:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - table names are constants here
        return int(cur.fetchone()[0])


async def run_step(
    svc: Services, n: int, seconds: float, every: int, jpegs: list[bytes], drain: float
) -> dict[str, float]:
    conn = _counter(svc)
    base_events, base_frames = _count(conn, "fleet_events"), _count(conn, "frames")
    step = Step()
    dims = [probe_image(j)[1:] for j in jpegs]
    t0 = time.monotonic()
    until = t0 + seconds
    tasks = [asyncio.create_task(camera(i, svc.mqtt_port, jpegs, dims, until, every, step)) for i in range(n)]
    samples: list[tuple[float, int]] = []  # (time, events stored in this step)
    deadline = until + drain
    while time.monotonic() < deadline:
        samples.append((time.monotonic(), _count(conn, "fleet_events") - base_events))
        if all(t.done() for t in tasks) and samples[-1][1] >= len(step.event_sent):
            break
        await asyncio.sleep(SAMPLE_S)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    counts = [c for _, c in samples]
    lags = []
    for i, sent_at in enumerate(step.event_sent):
        j = bisect_right(counts, i)  # first sample with more than i events stored
        lags.append((samples[j][0] if j < len(samples) else deadline) - sent_at)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT EXTRACT(EPOCH FROM (received_at - captured_at)) FROM frames ORDER BY id OFFSET %s", (base_frames,)
        )
        frame_lags = [float(r[0]) for r in cur.fetchall()]
    stored_events = counts[-1] if counts else 0
    conn.close()
    return {
        "cameras": n,
        "events_sent": len(step.event_sent),
        "events_stored": stored_events,
        "frames_sent": step.frames,
        "frames_stored": len(frame_lags),
        "event_p99": percentile(lags, 99),
        "frame_p99": percentile(frame_lags, 99),
        "late": step.late,
        "rss": svc.rss_mb(),
        "rate": len(step.event_sent) / seconds,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ladder", default="50,100,200,400,800", help="camera counts to try, in order")
    ap.add_argument("--step-s", type=float, default=30.0, help="seconds of load per step")
    ap.add_argument("--frame-every", type=int, default=10, help="a frame with every k-th event (0: none)")
    ap.add_argument("--target-s", type=float, default=1.0, help="p99 ingest lag that a step must stay under")
    ap.add_argument("--drain", type=float, default=60.0, help="seconds a step may take to be stored after it ends")
    ap.add_argument("--s3", choices=S3_SERVERS, default="seaweedfs", help="the S3 server the hub stores into")
    ap.add_argument("--smoke", action="store_true", help="steps of 5 and 10 cameras, 3 s each")
    args = ap.parse_args()
    if args.smoke:
        args.ladder, args.step_s, args.drain = "5,10", 3.0, 30.0
    ladder = [int(x) for x in args.ladder.split(",")]
    jpegs = clip_jpegs(20, smoke=args.smoke)
    print(f"fleet_sim: 1 event/s per camera + a frame every {args.frame_every} events; one 'camfleet-hub ingest'"
          f" on PostgreSQL + S3 ({args.s3}); p99 target {args.target_s:g} s")  # fmt: skip
    print("| cameras | events/s | events sent/stored | frames sent/stored | p99 event lag s | p99 frame lag s "
          "| late ticks | hub RSS MB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    best = 0
    with services([f"sim-{n:04d}" for n in range(max(ladder))], s3=args.s3) as svc:
        for n in ladder:
            r = asyncio.run(run_step(svc, n, args.step_s, args.frame_every, jpegs, args.drain))
            print(f"| {n} | {r['rate']:.0f} | {r['events_sent']}/{r['events_stored']} | "
                  f"{r['frames_sent']}/{r['frames_stored']} | {r['event_p99']:.2f} | {r['frame_p99']:.2f} | "
                  f"{r['late']} | {r['rss']:.0f} |", flush=True)  # fmt: skip
            complete = r["events_stored"] >= r["events_sent"] and r["frames_stored"] >= r["frames_sent"]
            ok = complete and max(r["event_p99"], r["frame_p99"]) < args.target_s and not r["late"]
            if not ok:
                break
            best = n
    print(f"largest N with p99 ingest lag < {args.target_s:g} s: {best} cameras")
    return 0


if __name__ == "__main__":
    sys.exit(main())
