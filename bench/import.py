"""Import throughput: images/s imported from a zip of the shared clothing images ÷ the raw decode + embed rate.

An import stores each image (object + blob/image/item rows, one transaction per file), makes its thumbnail,
hashes it and embeds it with the real ImageNet default bundle (tf_efficientnet_lite0, ONNX Runtime) and checks it
for near-duplicates. The raw baseline decodes and embeds the same images, batched the same way, with the same
loaded runtime, in the same run.
    python bench/import.py [--images 600] [--bundle DIR] [--db-url postgresql+psycopg2://...]
    python bench/import.py --smoke     # seconds: 48 of the tests' carried images, does every part still run
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, SMOKE_DATA, require_shared  # noqa: E402

from camfleet_contract.bundle import pack_bundle  # noqa: E402
from camfleet_hub.app import Hub, HubServices  # noqa: E402
from camfleet_hub.core.config import HubSettings
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.embeddings import decode_for_embedding
from camfleet_hub.datasets.models import Site
from camfleet_hub.imports import jobs as import_jobs
from camfleet_hub.imports import staging
from camfleet_hub.imports.importer import CHUNK
from camfleet_hub.imports.models import ImportKind, ImportStatus
from camfleet_hub.training import registry

CLOTHING = SHARED_DATA / "clothing" / "train"


def dataset(root: Path, count: int) -> list[tuple[str, bytes]]:
    """``count`` distinct clothing images of ``root`` (a folder per class), round-robin over the classes, as
    (class/name, bytes); fewer when ``root`` holds fewer."""
    per_class = {c.name: sorted(c.glob("*.jpg")) for c in sorted(root.iterdir()) if c.is_dir()}
    count = min(count, sum(len(files) for files in per_class.values()))
    out: list[tuple[str, bytes]] = []
    i = 0
    while len(out) < count:
        for cls, files in per_class.items():
            if i < len(files) and len(out) < count:
                out.append((f"{cls}/{files[i].name}", files[i].read_bytes()))
        i += 1
    return out


def zip_of(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def export_default(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "camfleet_trainer", "export-default", "--out", str(out), "--cache-dir", str(out.parent)],
        check=True,
        capture_output=True,
    )
    return out


def raw_rate(services: HubServices, entries: list[tuple[str, bytes]]) -> float:
    """Images/s of decode + embed alone (batches of the importer's chunk size)."""
    assert services.embedder is not None
    with services.sessions() as session:
        loaded = services.embedder.runtime(session)
    assert loaded is not None
    _model, runtime = loaded
    max_pixels = services.settings.ingest.max_pixels
    start = time.perf_counter()
    for i in range(0, len(entries), CHUNK):
        rgbs = [decode_for_embedding(data, max_pixels) for _name, data in entries[i : i + CHUNK]]
        services.embedder.embed(runtime, rgbs)
    return len(entries) / (time.perf_counter() - start)


def import_rate(services: HubServices, data: bytes, classifier: str) -> tuple[float, dict[str, object]]:
    with services.sessions() as session:
        site = session.query(Site).filter_by(name="bench").one()
        clf = crud.create_classifier(session, site, classifier)
        start = time.perf_counter()
        token, total = staging.stage_zip(services, io.BytesIO(data))
        job = import_jobs.create_job(
            services, session, clf, ImportKind.ZIP, "bench", None, {"staging": token, "file": "bench.zip"}, total
        )
        job_id = job.id
    assert services.import_worker is not None
    services.import_worker.wait(job_id, 3600)
    elapsed = time.perf_counter() - start
    with services.sessions() as session:
        job = import_jobs.get_job(session, job_id)
        assert job.status == ImportStatus.SUCCEEDED.value, job.message
        counts = dict(job.counts)
    return int(counts.get("imported", 0)) / elapsed, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--bundle", type=Path, help="an exported default bundle folder (default: export one now)")
    ap.add_argument("--db-url", default=None, help="database URL (default: SQLite in a temp folder)")
    ap.add_argument("--smoke", action="store_true", help="48 of the tests' carried images")
    args = ap.parse_args()

    if args.smoke:
        entries = dataset(SMOKE_DATA / "clothing" / "train", 48)
    else:
        require_shared(CLOTHING)
        entries = dataset(CLOTHING, args.images)
    data = zip_of(entries)
    with tempfile.TemporaryDirectory(prefix="camfleet-bench-import-") as tmp:
        bundle = args.bundle or export_default(Path(tmp) / "default")
        settings = HubSettings.model_validate(
            {
                "data_dir": str(Path(tmp) / "hub"),
                "db": {"url": args.db_url or "sqlite:///hub.db"},
                "auth": {"admin_password": "bench-password-1"},
            }
        )
        hub = Hub(settings, http=False, ingest=False, broker=False, publisher=False, datasets=True)
        services = hub.start()
        try:
            with services.sessions() as session:
                registry.put_default(services, session, pack_bundle(bundle))
                crud.create_site(session, "bench")
            raw_rate(services, entries[: CHUNK * 2])  # warm-up: load the runtime, first inferences
            raw_before = raw_rate(services, entries)
            hub_rate, counts = import_rate(services, data, "clothes")
            raw_after = raw_rate(services, entries)
        finally:
            hub.stop()
    raw = (raw_before + raw_after) / 2
    size = len(data) / len(entries) / 1024
    print(f"images: {len(entries)} clothing JPEGs, {size:.0f} KB each on average, in one zip")
    both = f"({raw_before:.1f} before, {raw_after:.1f} after)"
    print(f"raw decode + embed (lite0, ORT, batches of {CHUNK}): {raw:7.1f} images/s  {both}")
    print(f"hub import (store + rows + thumbnail + hash + embed): {hub_rate:7.1f} images/s   counts: {counts}")
    print(f"ratio import / raw: {hub_rate / raw:.2f}   (target >= 0.5)")


if __name__ == "__main__":
    main()
