"""POST /classify is bounded before it decodes: header pixel budgets, reduced-scale JPEG decoding, a per-request
total, and a fixed number of requests at once (503 + Retry-After beyond it)."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from apihelpers import bundle_zip
from PIL import Image

API = "/api/v1"


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only a signature and an IHDR: its size is readable, its pixels are not there at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"no pixels here")


def _big_jpeg(width: int = 7360, height: int = 4912) -> bytes:
    """A ~36-megapixel JPEG of a few hundred KB: smooth gradients with a little noise compress very well."""
    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = (x + 0 * y).astype(np.uint8)
    rgb[..., 1] = (y + 0 * x).astype(np.uint8)
    rgb[..., 2] = ((x + y) / 2).astype(np.uint8)
    rgb[::64, ::64] = rng.integers(0, 255, size=rgb[::64, ::64].shape, dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=60)
    return out.getvalue()


@pytest.fixture
def hub(sqlite_api, tmp_path: Path, trainer_key: str):  # type: ignore[no-untyped-def]
    c = sqlite_api.client
    assert c.post(f"{API}/sites", json={"name": "shop"}).status_code == 201
    assert c.post(f"{API}/sites/shop/classifiers", json={"name": "clothes"}).status_code == 201
    default_zip = bundle_zip(tmp_path, trainer_key, classes=["a", "b", "c"], classifier="imagenet")
    assert c.put(f"{API}/models/default", files={"file": ("d.zip", default_zip, "application/zip")}).status_code == 200
    return sqlite_api


def _post(client, images: list[tuple[str, bytes]]):  # type: ignore[no-untyped-def]
    files = [("files", (name, data, "application/octet-stream")) for name, data in images]
    return client.post(f"{API}/classify", data={"site": "shop", "classifier": "clothes"}, files=files)


def test_four_36_megapixel_jpegs_decode_at_reduced_scale(hub) -> None:  # type: ignore[no-untyped-def]
    """The attack from issue 10: four 36-MP JPEGs of ~550 KB. Each used to decode to 108 MB of RGB (903 MB RSS)."""
    big = _big_jpeg()
    assert 300_000 < len(big) < 900_000
    tracemalloc.start()  # numpy reports its buffers to tracemalloc: the decoded arrays are counted here
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        r = _post(hub.client, [(f"big{i}.jpg", big) for i in range(4)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 4
    growth_mb = (peak - before) / 1e6
    print(f"traced peak growth for 4 x 36 MP: {growth_mb:.1f} MB")
    assert growth_mb < 100, f"classify held {growth_mb:.0f} MB of arrays for four 36-MP JPEGs"


@pytest.mark.parametrize(
    ("images", "status", "words"),
    [
        # 49 MP from the header alone: the pixels are not even there, so a decode would have been a 422.
        (
            [("ok.png", _png_header(100, 100)), ("huge.png", _png_header(7000, 7000))],
            413,
            ["images[1] (huge.png)", "7000x7000", "classify.max_image_pixels"],
        ),
        # 4 x 7.5 MP of PNG (no reduced decoding for PNG): over the per-request total at the fourth.
        (
            [(f"p{i}.png", _png_header(3000, 2500)) for i in range(4)],
            413,
            ["images[3] (p3.png)", "classify.max_request_pixels"],
        ),
        ([("bomb.png", _png_header(50_000, 50_000))], 413, ["images[0] (bomb.png)"]),
        ([("a.png", _png_header(64, 64)), ("b.txt", b"not an image")], 422, ["images[1] (b.txt)"]),
    ],
)
def test_pixel_budgets_are_checked_from_headers(hub, images, status: int, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    r = _post(hub.client, images)
    assert r.status_code == status, r.text
    for word in words:
        assert word in r.json()["detail"]


def test_bytes_per_image_and_per_request(hub) -> None:  # type: ignore[no-untyped-def]
    limits = hub.services.settings.classify
    r = _post(hub.client, [("fat.png", _png_header(10, 10) + b"\0" * (limits.max_image_bytes + 1))])
    assert r.status_code == 413 and "images[0] (fat.png)" in r.json()["detail"]
    each = limits.max_image_bytes - 10
    n = limits.max_request_bytes // each + 1
    head = _png_header(10, 10)
    r = _post(hub.client, [(f"{i}.png", head + b"\0" * (each - len(head))) for i in range(n)])
    assert r.status_code == 413 and "classify.max_request_bytes" in r.json()["detail"]


def test_busy_hub_answers_503_with_retry_after(hub) -> None:  # type: ignore[no-untyped-def]
    small = io.BytesIO()
    Image.new("RGB", (300, 300), (10, 200, 30)).save(small, "JPEG")
    slots = hub.client.app.state.services.runtimes.slots
    held = 0
    try:
        for _ in range(hub.services.settings.classify.concurrency):  # as if that many requests were decoding
            slots.acquire()
            held += 1
        r = _post(hub.client, [("a.jpg", small.getvalue())])
        assert r.status_code == 503 and "classify.concurrency" in r.json()["detail"]
        assert r.headers["retry-after"] == str(hub.services.settings.classify.retry_after_s)
    finally:
        for _ in range(held):
            slots.release()
    assert _post(hub.client, [("a.jpg", small.getvalue())]).status_code == 200
