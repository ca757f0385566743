"""Triage page server time at 100,000 images in one classifier, on SQLite and PostgreSQL.

A real hub process (uvicorn, auth off) over a database into which 100k image rows (50% NEW, 45% in 10 groups,
5% DELETED) are bulk-inserted. Timed over loopback HTTP, sequential requests, after a warm-up:
- the Triage page (``/ui/.../triage``: the group tree with grouped counts),
- the JSON listing it calls (``GET .../images?status=NEW&limit=60&after_id=…``), first page and deep pages,
- the classifier page (tree, health, mosaic of one group) and the health JSON, for reference.
    python bench/triage.py [--images 100000] [--requests 200] [--db sqlite,postgresql]
    python bench/triage.py --smoke     # seconds: 2,000 images, 10 requests each, both databases
(Synthetic rows only: this bench needs no shared data.)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hub_process, mosquitto  # noqa: E402

from camfleet_hub.core.db.types import utcnow
from camfleet_hub.datasets.models import Blob, Classifier, Group, Image, Site

SITE, CLF = "bench", "door"
GROUPS = [f"class{i}" for i in range(10)]
PG_ADMIN = os.environ.get("CAMFLEET_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def fill(db_url: str, count: int) -> None:
    """Bulk-insert ``count`` blob + image rows into the hub's (migrated) database."""
    engine = create_engine(db_url)
    with engine.begin() as conn:
        site_id = conn.scalar(select(Site.id).where(Site.name == SITE))
        clf_id = conn.scalar(select(Classifier.id).where(Classifier.site_id == site_id, Classifier.name == CLF))
        group_ids = [
            conn.scalar(select(Group.id).where(Group.classifier_id == clf_id, Group.name == g)) for g in GROUPS
        ]
    now = utcnow()
    rng = random.Random(0)
    chunk = 5000
    for start in range(0, count, chunk):
        blobs, images = [], []
        for n in range(start, min(count, start + chunk)):
            sha = hashlib.sha256(f"bench-{n}".encode()).hexdigest()
            blobs.append(
                {"sha256": sha, "size": 40_000, "width": 640, "height": 480, "format": "JPEG", "created_at": now}
            )
            r = rng.random()
            status, group = (
                ("NEW", None) if r < 0.5 else ("DELETED", None) if r < 0.55 else ("GROUP", rng.choice(group_ids))
            )
            images.append(
                {
                    "classifier_id": clf_id,
                    "sha256": sha,
                    "status": status,
                    "group_id": group,
                    "source": "upload",
                    "original_name": f"img-{n}.jpg",
                    "created_at": now,
                    "updated_at": now,
                }
            )
        with engine.begin() as conn:
            conn.execute(insert(Blob), blobs)
            conn.execute(insert(Image), images)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()


def timed(client: httpx.Client, urls: list[str]) -> list[float]:
    out = []
    for url in urls:
        t0 = time.perf_counter()
        r = client.get(url)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return out


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def run(db: str, db_url: str, count: int, requests: int, tmp: Path, mqtt_port: int) -> dict[str, tuple[float, float]]:
    workdir = tmp / db
    workdir.mkdir()
    config = (
        f'[db]\nurl = "{db_url}"\n'
        f'[mqtt]\nembedded = false\nport = {mqtt_port}\nroot = "bench{db}"\nclient_id = "bench-{db}"\n'
        "[auth]\nenabled = false\n[ingest]\nenabled = false\n"
    )
    with hub_process(workdir, config) as base:
        c = httpx.Client(base_url=base, timeout=60)
        c.post("/api/v1/sites", json={"name": SITE}).raise_for_status()
        c.post(f"/api/v1/sites/{SITE}/classifiers", json={"name": CLF}).raise_for_status()
        for g in GROUPS:
            c.post(f"/api/v1/sites/{SITE}/classifiers/{CLF}/groups", json={"name": g}).raise_for_status()
        t0 = time.perf_counter()
        fill(db_url, count)
        print(f"[{db}] inserted {count} images in {time.perf_counter() - t0:.1f} s", flush=True)
        api = f"/api/v1/sites/{SITE}/classifiers/{CLF}"
        ui = f"/ui/sites/{SITE}/classifiers/{CLF}"
        new_ids = [i["id"] for i in c.get(f"{api}/images", params={"status": "NEW", "limit": 1000}).json()]
        top = new_ids[-1] + count  # ids are roughly dense; deep pages start anywhere in the range
        rng = random.Random(1)
        plans = {
            "triage page": [f"{ui}/triage"] * requests,
            "NEW listing, first page": [f"{api}/images?status=NEW&limit=60"] * requests,
            "NEW listing, deep pages": [
                f"{api}/images?status=NEW&limit=60&after_id={rng.randrange(top)}" for _ in range(requests)
            ],
            "classifier page": [f"{ui}?group=class3"] * (requests // 4),
            "health JSON": [f"{api}/health"] * (requests // 4),
        }
        timed(c, [u for urls in plans.values() for u in urls[:5]])  # warm-up
        figures = {}
        for name, urls in plans.items():
            ms = timed(c, urls)
            figures[name] = (statistics.median(ms), p(ms, 95))
            print(f"[{db}] {name:28s} p50 {figures[name][0]:7.1f} ms   p95 {figures[name][1]:7.1f} ms", flush=True)
        return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--smoke", action="store_true", help="2,000 images, 10 requests each")
    args = ap.parse_args()
    if args.smoke:
        args.images, args.requests = 2000, 10
    results = {}
    with tempfile.TemporaryDirectory() as tmp_s, mosquitto() as mqtt_port:
        tmp = Path(tmp_s)
        for db in args.db.split(","):
            if db == "sqlite":
                results[db] = run(db, f"sqlite:///{tmp / 'bench.db'}", args.images, args.requests, tmp, mqtt_port)
            else:
                import psycopg2

                name = f"cfbench_{uuid.uuid4().hex[:8]}"
                admin = psycopg2.connect(PG_ADMIN)
                admin.autocommit = True
                admin.cursor().execute(f'CREATE DATABASE "{name}"')
                url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://") + f"/{name}"
                try:
                    results[db] = run(db, url, args.images, args.requests, tmp, mqtt_port)
                finally:
                    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    admin.close()
    print(f"\n{args.images} images in one classifier, {args.requests} sequential requests each (ms, p50 / p95):")
    for db, figures in results.items():
        for name, (p50, p95) in figures.items():
            print(f"| {db} | {name} | {p50:.1f} | {p95:.1f} |")


if __name__ == "__main__":
    main()
