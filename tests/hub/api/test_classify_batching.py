"""POST /classify batches: concurrent requests for one model share one ONNX Runtime run (counted by the model's
batcher), answers equal the unbatched ones, a full queue answers 503 + Retry-After, top_k and image URLs."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from apihelpers import bundle_zip, wait_for
from PIL import Image

from camfleet_contract.bundle import unpack_bundle
from camfleet_contract.images import decode_image
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_hub.training.models import ModelVersion
from tests.support.loopback_http import loopback_server

API = "/api/v1"
CLASSES = ["jersey", "sock", "cowboy_hat"]


def _png(rgb: tuple[int, int, int], size: int = 40) -> bytes:
    noise = np.random.default_rng(sum(rgb)).integers(0, 40, (size, size, 3))
    pixels = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 20), (20, 150, 150)]


def _hub(hub_factory: Callable[..., Any], sqlite_url: str, tmp_path: Path, key: str, **classify: Any) -> Any:
    """A hub whose classifier 'shop/clothes' answers with the ImageNet default (a tiny model, dynamic batch)."""
    api = hub_factory(sqlite_url, sections={"classify": {"concurrency": 16, **classify}})
    c = api.client
    assert c.post(f"{API}/sites", json={"name": "shop"}).status_code == 201
    assert c.post(f"{API}/sites/shop/classifiers", json={"name": "clothes"}).status_code == 201
    default = bundle_zip(tmp_path, key, classes=CLASSES, classifier="imagenet")
    r = c.put(f"{API}/models/default", files={"file": ("d.zip", default, "application/zip")})
    assert r.status_code in (200, 201), r.text
    return api


def _json(client: Any, images: list[bytes], **extra: Any) -> Any:
    body = {"site": "shop", "classifier": "clothes", "images": [base64.b64encode(d).decode() for d in images]}
    return client.post(f"{API}/classify", json={**body, **extra})


def _model(api: Any) -> ModelVersion:
    with api.services.sessions() as session:
        model = session.query(ModelVersion).filter(ModelVersion.classifier_id.is_(None)).one()
        session.expunge(model)
        return model


def _unbatched(api: Any, tmp_path: Path, images: list[bytes]) -> list[dict[str, float]]:
    """Every probability of each image run alone (batch 1) by the runtime the agent uses, on the stored bundle."""
    model = _model(api)
    data = api.services.store.get(model.sha256, prefix="bundles")
    runtime = ClassifierRuntime(unpack_bundle(data, tmp_path / "unbatched"), top_k=len(CLASSES))
    return [{p.label: p.probability for p in runtime.classify([decode_image(d)])[0].predictions} for d in images]


def _in_threads(calls: list[Callable[[], Any]]) -> list[Any]:
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        out[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(not t.is_alive() for t in threads), "a classify request did not return"
    return out


def test_concurrent_requests_run_as_one_batch_with_unbatched_answers(
    hub_factory: Callable[..., Any], sqlite_url: str, tmp_path: Path, trainer_key: str
) -> None:
    # The batch closes when 4 images are there (the wait is long), so it is one run whatever the machine's speed.
    api = _hub(hub_factory, sqlite_url, tmp_path, trainer_key, max_batch=4, batch_wait_ms=60_000)
    images = [_png(c) for c in COLOURS[:4]]
    answers = _in_threads([lambda d=d: _json(api.client, [d], top_k=3) for d in images])  # type: ignore[misc]
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]

    stats = _batcher(api).stats
    assert (stats.batches, stats.requests, stats.images, stats.largest) == (1, 4, 4, 4)

    expected = _unbatched(api, tmp_path, images)
    for answer, want in zip(answers, expected, strict=True):
        result = answer.json()["results"][0]
        got = {p["label"]: p["probability"] for p in result["predictions"]}
        assert got.keys() == want.keys()
        assert np.allclose([got[k] for k in want], list(want.values()), atol=1e-5), (got, want)
        assert result["label"] == max(want, key=want.__getitem__)
    assert answers[0].json()["model"]["precision"] == "fp32"

    # 4 images fill a batch at once (a smaller request would wait the long batch_wait_ms).
    one = _json(api.client, images, top_k=1).json()
    assert [len(r["predictions"]) for r in one["results"]] == [1] * 4
    assert [len(r["predictions"]) for r in _json(api.client, images).json()["results"]] == [3] * 4  # 5, 3 classes
    assert _batcher(api).stats.batches == 3
    bad = _json(api.client, images[:1], top_k=0)
    assert bad.status_code == 422 and "top_k" in bad.text


def _batcher(api: Any) -> Any:
    """The default model's batcher (None until a classify request loaded the model)."""
    return api.client.app.state.services.runtimes.batcher(_model(api))


def test_full_queue_answers_503_with_retry_after(
    hub_factory: Callable[..., Any], sqlite_url: str, tmp_path: Path, trainer_key: str
) -> None:
    # Room for 3 queued images; a batch of 3 runs at once, fewer wait (a minute) for more.
    api = _hub(hub_factory, sqlite_url, tmp_path, trainer_key, max_batch=3, queue_images=3, batch_wait_ms=60_000)
    images = [_png(c) for c in COLOURS[:3]]
    first: list[Any] = []
    waiting = threading.Thread(target=lambda: first.append(_json(api.client, images[:2])))
    waiting.start()
    try:
        wait_for(lambda: _loaded_pending(api) == 2, "the first request's 2 images to wait in the queue")
        refused = _json(api.client, images[1:3])  # 2 + 2 > classify.queue_images=3
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "2" and "classify.queue_images=3" in refused.json()["detail"]
        third = _json(api.client, images[2:3])  # fills the batch of 3: both run now
        assert third.status_code == 200, third.text
    finally:
        waiting.join(120)
    assert first and first[0].status_code == 200, first
    stats = _batcher(api).stats
    assert (stats.batches, stats.requests, stats.refused) == (1, 2, 1)


def _loaded_pending(api: Any) -> int:
    batcher = _batcher(api)
    return 0 if batcher is None else int(batcher.pending)


def test_image_urls_and_multipart_fields(
    hub_factory: Callable[..., Any], sqlite_url: str, tmp_path: Path, trainer_key: str
) -> None:
    api = _hub(hub_factory, sqlite_url, tmp_path, trainer_key)
    red, blue = _png(COLOURS[0]), _png(COLOURS[2])
    with loopback_server() as web:
        web.images["red.png"] = red
        by_url = api.client.post(
            f"{API}/classify",
            json={"site": "shop", "classifier": "clothes", "urls": [web.image_url("red.png")], "top_k": 2},
        )
        missing = api.client.post(
            f"{API}/classify", json={"site": "shop", "classifier": "clothes", "urls": [web.image_url("nope.png")]}
        )
        form = api.client.post(
            f"{API}/classify",
            data={"site": "shop", "classifier": "clothes", "top_k": "1", "urls": [web.image_url("red.png")]},
            files=[("files", ("blue.png", blue, "image/png"))],
        )
    assert by_url.status_code == 200, by_url.text
    want = _json(api.client, [red]).json()["results"][0]
    got = by_url.json()["results"][0]
    assert got["label"] == want["label"] and len(got["predictions"]) == 2
    assert got["probability"] == pytest.approx(want["probability"], abs=1e-6)
    assert missing.status_code == 422 and missing.json()["detail"].startswith("urls[0]: HTTP 404"), missing.text
    assert form.status_code == 200, form.text
    assert [len(r["predictions"]) for r in form.json()["results"]] == [1, 1]  # the file, then the URL
    assert form.json()["results"][1]["label"] == want["label"]

    api.services.settings.imports.url_allow_private = False  # the import guard's default: loopback is refused
    guarded = api.client.post(
        f"{API}/classify", json={"site": "shop", "classifier": "clothes", "urls": ["http://127.0.0.1:9/x.png"]}
    )
    assert guarded.status_code == 422 and "urls[0]" in guarded.text and "url_allow_private" in guarded.text
