"""REST classify benchmark: a real hub process (uvicorn on loopback) answering POST /api/v1/classify.

For 1, 4 and 16 concurrent clients (threads, one keep-alive HTTP connection each, one JPEG per request, multipart
bodies encoded once before the clock starts so the client costs the shared cores little): images/s, p50/p99 latency
and 503 answers, divided by raw ONNX Runtime at batch 32 on already preprocessed images on the same model file
(target >= 0.7 at 16 clients). Raw and client windows alternate (the hub idle during a raw window), so a change in
the machine's speed hits both alike; the ratio is the median of the per-pair ratios. Concurrent requests are
gathered by the hub's batcher (classify.batch_wait_ms, classify.max_batch, classify.runners). A last line gives
a stricter ceiling: ORT alone in the hub's own layout (its runners, threads per run and max_batch).

The model is the default EfficientNet-Lite0 bundle (ImageNet head) exported by the trainer; the images are frames
of the shared plaza clip as 640-px JPEGs.
    python bench/rest.py [--seconds 20]
    python bench/rest.py --smoke     # a few seconds: the tests' tiny bundle and clip, does every part still run
"""

from __future__ import annotations

import argparse
import http.client
import io
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support for the smoke bundle
from common import CLIP, REPO, free_port, hub_process, threads_rate  # noqa: E402

from camfleet_contract.bundle import pack_bundle  # noqa: E402
from camfleet_contract.images import preprocess_batch  # noqa: E402
from camfleet_contract.runtime import ClassifierRuntime  # noqa: E402
from camfleet_hub.core.config import ClassifySettings  # noqa: E402

SITE, CLASSIFIER = "bench", "rest"
SMOKE_CLIP = REPO / "tests" / "data" / "video" / "plaza.avi"
CLIENTS = (1, 4, 16)
RAW_BATCH = 32
RAW_WINDOW_S = 1.5  # raw ORT while the clients rest
CLIENT_WINDOW_S = 3.0


def clip_jpegs(clip: Path, n: int, width: int = 640) -> list[bytes]:
    """`n` frames of `clip` (looping) as JPEGs `width` px wide."""
    out: list[bytes] = []
    while len(out) < n:
        cap = cv2.VideoCapture(str(clip))
        got = 0
        while len(out) < n:
            ok, bgr = cap.read()
            if not ok:
                break
            got += 1
            h = round(bgr.shape[0] * width / bgr.shape[1])
            rgb = cv2.cvtColor(cv2.resize(bgr, (width, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, "JPEG", quality=85)
            out.append(buf.getvalue())
        cap.release()
        if got == 0:
            raise SystemExit(f"cannot read any frame of {clip}")
    return out


def raw_rate(rt: ClassifierRuntime, jpegs: list[bytes], seconds: float) -> float:
    """Images/s of session.run at batch 32 on already decoded and preprocessed images: the ceiling."""
    from camfleet_contract.images import decode_image

    decoded = [decode_image(j) for j in (jpegs * RAW_BATCH)[:RAW_BATCH]]
    batch = preprocess_batch(decoded, rt.manifest.preprocessing)
    rt.run(batch)  # warm-up
    n, start = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - start < seconds:
        rt.run(batch)
        n += 1
    return n * RAW_BATCH / (time.perf_counter() - start)


def layout_rate(bundle: Path, jpegs: list[bytes], seconds: float, settings: ClassifySettings) -> float:
    """Images/s of ORT alone in the hub's own layout: `runners` threads each running full `max_batch` batches on
    one session with the hub's threads per run. A stricter ceiling than the issue's batch-32 baseline."""
    from camfleet_contract.images import decode_image

    runners, threads = settings.run_layout()
    rt = ClassifierRuntime(bundle, threads=threads)
    batch = preprocess_batch([decode_image(j) for j in jpegs[: settings.max_batch]], rt.manifest.preprocessing)

    def step(_stream: int, _call: int) -> int:
        rt.run(batch)
        return len(batch)

    return threads_rate(step, runners, seconds)


def multipart_body(form: dict[str, str], jpeg: bytes) -> tuple[bytes, str]:
    """(body, content-type) of one classify request: the form fields and one ``files`` JPEG, encoded by httpx."""
    request = httpx.Request("POST", "http://bench/", data=form, files=[("files", ("frame.jpg", jpeg, "image/jpeg"))])
    return request.read(), request.headers["content-type"]


def client_rate(url: str, token: str, jpegs: list[bytes], clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads posting one JPEG per request for `seconds`: images/s, p50/p99 ms, 503s."""
    latencies: list[float] = []
    busy = [0]
    errors: list[str] = []
    lock = threading.Lock()
    start_at = threading.Barrier(clients + 1)
    stop = threading.Event()

    # The client shares the hub's cores: every multipart body is encoded once, before the clock starts, so the
    # threads only send bytes over their keep-alive connection (no per-request form encoding).
    form = {"site": SITE, "classifier": CLASSIFIER, "top_k": "5"}
    bodies = [multipart_body(form, jpeg) for jpeg in jpegs]
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    def work(i: int) -> None:
        # http.client, not httpx: a tenth of the client's CPU per request, which the hub would otherwise lose.
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn = http.client.HTTPConnection(host, port, timeout=120)

        def post(k: int) -> tuple[int, bytes]:
            body, ctype = bodies[k % len(bodies)]
            conn.request("POST", "/api/v1/classify", body=body, headers={**headers, "Content-Type": ctype})
            r = conn.getresponse()
            return r.status, r.read()

        try:
            post(i)
            start_at.wait()
            k = i
            while not stop.is_set():
                t0 = time.perf_counter()
                status, text = post(k)
                dt = (time.perf_counter() - t0) * 1000.0
                k += clients
                with lock:
                    if status == 200:
                        latencies.append(dt)
                    elif status == 503:
                        busy[0] += 1
                    else:
                        errors.append(f"{status} {text[:200]!r}")
                        stop.set()
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start_at.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(300)
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"classify failed: {errors[0]}")
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {
        "images_s": len(latencies) / elapsed,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "busy": busy[0],
    }


def bundle_zip(tmp: Path, smoke: bool) -> bytes:
    if smoke:
        from camfleet_contract.signing import generate_signing_key
        from tests.support.tinybundle import make_bundle

        make_bundle(tmp / "bundle", generate_signing_key(), classifier="imagenet")
    else:
        cmd = [sys.executable, "-m", "camfleet_trainer", "export-default", "--out", str(tmp / "bundle")]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return pack_bundle(tmp / "bundle")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="per client count, raw and client windows together")
    ap.add_argument("--smoke", action="store_true", help="a few seconds on the tests' tiny bundle and clip")
    ap.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS), help="concurrent clients per row")
    ap.add_argument(
        "--classify", nargs="*", default=[], metavar="KEY=VALUE", help="hub [classify] settings, e.g. max_batch=4"
    )
    args = ap.parse_args()
    clip = SMOKE_CLIP if args.smoke else CLIP
    seconds = 1.0 if args.smoke else args.seconds
    window = 1.0 if args.smoke else CLIENT_WINDOW_S
    if not clip.exists():
        raise SystemExit(f"the clip {clip} is missing (set CAMFLEET_TEST_DATA)")
    jpegs = clip_jpegs(clip, 8 if args.smoke else 64)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        data = bundle_zip(tmp, args.smoke)
        rt = ClassifierRuntime(tmp / "bundle")
        model = "tiny test bundle" if args.smoke else "tf_efficientnet_lite0 (ImageNet head)"
        print(f"model: {model}, {rt.model_file}, ONNX Runtime CPU; {len(jpegs)} JPEGs of {clip.name}, 640 px")
        print(f"raw ONNX Runtime, batch {RAW_BATCH}, preprocessed input: {raw_rate(rt, jpegs, 1.0):8.1f} images/s")

        # Login off (a loopback bench); the embedded broker on a free port; every client may decode at once.
        config = (
            f"[mqtt]\nport = {free_port()}\n[auth]\nenabled = false\n[ingest]\nenabled = false\n"
            "[classify]\nconcurrency = 32\n" + "".join(f"{kv}\n" for kv in args.classify)
        )
        (tmp / "work").mkdir()
        with hub_process(tmp / "work", config, timeout=120) as url:
            token = ""
            with httpx.Client(base_url=url, timeout=120) as api:
                api.post("/api/v1/sites", json={"name": SITE}).raise_for_status()
                api.post(f"/api/v1/sites/{SITE}/classifiers", json={"name": CLASSIFIER}).raise_for_status()
                files = {"file": ("default.zip", data, "application/zip")}
                api.put("/api/v1/models/default", files=files).raise_for_status()
            print(
                "\n| clients | images/s | raw ORT batch 32 | ÷ raw (median of pairs) | p50 ms | p99 ms | 503 answers |"
            )
            print("| --- | --- | --- | --- | --- | --- | --- |")
            for clients in args.clients:
                pairs = [
                    (
                        raw_rate(rt, jpegs, RAW_WINDOW_S if not args.smoke else 0.3),
                        client_rate(url, token, jpegs, clients, window),
                    )
                    for _ in range(max(1, round(seconds / (window + RAW_WINDOW_S))))
                ]
                ratio = statistics.median(m["images_s"] / raw for raw, m in pairs)
                rate = statistics.median(m["images_s"] for _, m in pairs)
                raw = statistics.median(raw for raw, _ in pairs)
                p50 = statistics.median(m["p50"] for _, m in pairs)
                p99 = max(m["p99"] for _, m in pairs)
                busy = sum(m["busy"] for _, m in pairs)
                print(
                    f"| {clients} | {rate:.1f} | {raw:.1f} | {ratio:.2f} | {p50:.1f} | {p99:.1f} | {busy} |", flush=True
                )
        print("(target: >= 0.70 of raw at 16 clients)")
        hub = ClassifySettings.model_validate(dict(kv.split("=", 1) for kv in args.classify))
        runners, threads = hub.run_layout()
        same = layout_rate(tmp / "bundle", jpegs, 0.3 if args.smoke else 4.0, hub)
        print(
            f"raw ONNX Runtime in the hub's layout ({runners} runs at once x {threads} thread(s), batch "
            f"{hub.max_batch}): {same:.1f} images/s, measured after the rows (the stricter ceiling)"
        )


if __name__ == "__main__":
    main()
