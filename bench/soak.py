"""Soak: N simulated agents x F frames/s x D seconds through Mosquitto into hub ingest (one process, or --hubs N
splitting the frames through an MQTT shared subscription) on PostgreSQL + S3 (SeaweedFS, what docker-compose runs;
--s3 moto for the Python emulator). Checks frames sent = frames stored (by frame id), reports the p50/p99 ingest
lag (captured_at -> the row's received_at, written in the batch that commits it), the rate the hub stored at, and
the hub's RSS over time (flat = no leak).

    python bench/soak.py --agents 50 --fps 2 --duration 600   # the documented 10-minute run
    python bench/soak.py --agents 50 --duration 120           # a shortened run
    python bench/soak.py --smoke                              # a few seconds: does it still run

Bounded: publishing stops after --duration, then the hub gets --drain seconds to store the rest. Exit 1 when a frame
is not stored by then (still queued in the broker when the hub is slower than the load, or lost) or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
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
from camfleet_contract.topics import Topics  # noqa: E402


async def agent(
    n: int, port: int, jpegs: list[bytes], fps: float, until: float, sent: list[str], late: list[int]
) -> None:
    """One camera's agent: a frame every 1/fps s, each awaited to its PUBACK (QoS 1) like the real outbox."""
    name = f"sim-{n:04d}"
    pub = AsyncPublisher("127.0.0.1", port, f"{name}-{uuid.uuid4().hex[:6]}")
    await pub.connect()
    topic = Topics().frame(SITE, name)
    dims = [probe_image(j)[1:] for j in jpegs]
    start, k = time.monotonic(), 0
    try:
        while True:
            due = start + k / fps
            if due >= until:
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -1.0 / fps:
                late[0] += 1
            fid = uuid.uuid4().hex
            jpeg = unique_jpeg(jpegs[(n + k) % len(jpegs)], fid)
            width, height = dims[(n + k) % len(jpegs)]
            header = new_header(name, SITE, name, jpeg, width, height).model_copy(update={"frame_id": fid})
            await pub.publish(topic, encode_frame(header, jpeg))
            sent.append(fid)
            k += 1
    finally:
        await pub.close()


def stored(svc: Services) -> tuple[list[str], list[float]]:
    """Stored frame ids and each frame's lag in seconds."""
    from sqlalchemy import create_engine, text

    engine = create_engine(svc.db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT frame_id, EXTRACT(EPOCH FROM (received_at - captured_at)) FROM frames")
            ).all()
    finally:
        engine.dispose()
    return [r[0] for r in rows], [float(r[1]) for r in rows]


def count_stored(svc: Services) -> int:
    import psycopg2

    url = svc.db_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM frames")
        return int(cur.fetchone()[0])


async def run(args: argparse.Namespace, svc: Services, jpegs: list[bytes]) -> dict[str, object]:
    sent: list[str] = []
    late = [0]
    rss: list[tuple[float, float]] = []
    each: list[list[float]] = []  # per hub process, when there are several
    counts: list[tuple[float, int]] = []  # (s, frames stored): the hub's storing rate over time
    t0 = time.monotonic()
    until = t0 + args.duration
    tasks = [
        asyncio.create_task(agent(n, svc.mqtt_port, jpegs, args.fps, until, sent, late)) for n in range(args.agents)
    ]
    while not all(t.done() for t in tasks):
        each.append(svc.rss_each_mb())
        rss.append((time.monotonic() - t0, sum(each[-1])))
        counts.append((time.monotonic() - t0, count_stored(svc)))
        await asyncio.sleep(args.sample_s)
    await asyncio.gather(*tasks)
    published = time.monotonic() - t0
    deadline = time.monotonic() + args.drain
    while (n := count_stored(svc)) < len(sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    counts.append((time.monotonic() - t0, n))
    each.append(svc.rss_each_mb())
    rss.append((time.monotonic() - t0, sum(each[-1])))
    return {"sent": sent, "late": late[0], "rss": rss, "each": each, "counts": counts, "published": published}


def storing_rate(counts: list[tuple[float, int]], published: float) -> float:
    """Frames stored per second while the agents published, skipping the first tenth (start-up)."""
    window = [(t, n) for t, n in counts if published * 0.1 <= t <= published]
    if len(window) < 2:
        return float("nan")
    return (window[-1][1] - window[0][1]) / max(window[-1][0] - window[0][0], 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--fps", type=float, default=2.0, help="frames per second per agent")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of publishing")
    ap.add_argument("--drain", type=float, default=120.0, help="seconds the hub gets to store the rest")
    ap.add_argument("--sample-s", type=float, default=10.0, help="RSS sampling interval")
    ap.add_argument("--s3", choices=S3_SERVERS, default="seaweedfs", help="the S3 server the hub stores into")
    ap.add_argument("--hubs", type=int, default=1, help="ingest processes (more than one: a shared subscription)")
    ap.add_argument("--smoke", action="store_true", help="5 agents x 4 s on the tests' clip")
    args = ap.parse_args()
    if args.smoke:
        args.agents, args.duration, args.drain, args.sample_s = 5, 4.0, 60.0, 1.0
    jpegs = clip_jpegs(40, smoke=args.smoke)
    cameras = [f"sim-{n:04d}" for n in range(args.agents)]
    with services(cameras, s3=args.s3, hubs=args.hubs) as svc:
        result = asyncio.run(run(args, svc, jpegs))
        ids, lags = stored(svc)
        described = svc.describe()
    sent = result["sent"]
    assert isinstance(sent, list)
    missing = set(sent) - set(ids)
    duplicates = len(ids) - len(set(ids))
    rss = result["rss"]
    assert isinstance(rss, list)
    third = max(1, len(rss) // 3)
    first = percentile([m for _, m in rss[:third]], 50)
    last = percentile([m for _, m in rss[-third:]], 50)
    minutes = max(rss[-1][0] - rss[0][0], 1e-9) / 60
    print(f"soak: {args.agents} agents x {args.fps:g} frames/s x {args.duration:g} s, {described}")
    print(f"frames sent: {len(sent)}  stored: {len(set(ids) & set(sent))}  not stored by the end: {len(missing)}  "
          f"duplicated: {duplicates}  late publishes: {result['late']}")  # fmt: skip
    print(f"ingest lag: p50 {percentile(lags, 50):.3f} s  p99 {percentile(lags, 99):.3f} s  "
          f"max {max(lags, default=float('nan')):.3f} s")  # fmt: skip
    print(f"hub RSS: start {rss[0][1]:.0f} MB, first third {first:.0f} MB, last third {last:.0f} MB, "
          f"end {rss[-1][1]:.0f} MB ({(last - first) / minutes:+.1f} MB/min)")  # fmt: skip
    counts = result["counts"]
    published = result["published"]
    assert isinstance(counts, list) and isinstance(published, float)
    print(f"hub storing rate while publishing: {storing_rate(counts, published):.1f} frames/s "
          f"(offered {args.agents * args.fps:g} frames/s)")  # fmt: skip
    print("rss samples (s, MB): " + " ".join(f"{t:.0f}:{m:.0f}" for t, m in rss))
    each = result["each"]
    assert isinstance(each, list)
    if args.hubs > 1:
        print("rss per hub process, start -> end (MB): "
              + ", ".join(f"{a:.0f} -> {b:.0f}" for a, b in zip(each[0], each[-1], strict=True)))  # fmt: skip
    return 1 if missing or duplicates else 0


if __name__ == "__main__":
    sys.exit(main())
