"""The older tools' REST calls as a client written from their documentation alone would send them.

Every request is shaped as the documents show it (field names, JSON shapes, value types: ``temple_id`` a string of
digits as in the temple server's ``create_request``, categories with spaces such as the recommended
"None of the categories", ``forceful`` a JSON boolean, one image or a list of them), and every documented answer
field is checked with its documented type:

- ``POST /api/save_data`` → only ``{"error_msg": "All OK"}``;
- ``POST /api/make_model`` → ``error_msg`` (list of strings, ``[]`` on success) and six boolean stage flags,
  status 200 or 400;
- ``POST /api/predict`` → ``error_msg`` (list), ``image_class`` (string) and ``class_confidence`` (float), lists of
  them for a list of images; "No category (Anomaly)" under 0.5;
- ``GET /cv?FILE_PATH_OR_URL[:HOW_MANY]`` → a JSON object of group → probability.

Where camfleet deliberately differs (a bearer token; 400 instead of the original's 500 for a failed save) the test
checks the difference docs/COMPAT.md documents.
"""

from __future__ import annotations

import base64
import io
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from camfleet_hub.compat.schemas import NO_CATEGORY
from tests.hub.api.test_compat_endpoints import FLAGS, b64, trainer_worker
from tests.support.loopback_http import LoopbackServer, loopback_server

API = "/api/v1"
TEMPLE_ID = "410010"
# The clothing classes under the category names a temple client would use: spaces, capitals, the catch-all.
CATEGORIES = {"dress": "Door open", "hat": "Door closed", "shoes": "None of the categories"}
TRAIN, TEST = 6, 2


@pytest.fixture
def web() -> Iterator[LoopbackServer]:
    with loopback_server() as server:
        yield server


def _save_body(path: Path, train_test: str, category: str) -> dict[str, Any]:
    """The six documented keys, every one a string."""
    return {
        "temple_id": TEMPLE_ID,
        "train_test": train_test,
        "category": category,
        "image": b64(path),
        "image_type": "jpg",
        "image_name": path.stem,
    }


def _png_b64(path: Path) -> str:
    out = io.BytesIO()
    PILImage.open(path).convert("RGB").save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def _is_json(r: httpx.Response) -> bool:
    return r.headers["content-type"].startswith("application/json")


def _save_refused(r: httpx.Response) -> str:
    """A refused save: a 4xx (the original: 500) whose JSON still has only ``error_msg``, a string."""
    assert 400 <= r.status_code < 500 and _is_json(r), r.text
    body = r.json()
    assert list(body) == ["error_msg"] and isinstance(body["error_msg"], str) and body["error_msg"] != "All OK"
    return str(body["error_msg"])


def _made(r: httpx.Response, status: int) -> dict[str, Any]:
    """make_model's documented answer: ``error_msg`` a list of strings (``[]`` iff 200) and six booleans."""
    assert r.status_code == status and _is_json(r), r.text
    body: dict[str, Any] = r.json()
    assert isinstance(body["error_msg"], list) and all(isinstance(m, str) for m in body["error_msg"])
    assert (body["error_msg"] == []) == (status == 200), body
    assert all(isinstance(body[f], bool) for f in FLAGS), body
    return body


def _predicted(r: httpx.Response, count: int | None) -> list[tuple[str, float]]:
    """predict's documented answer; ``count`` None: one image sent, single values back; else lists of ``count``."""
    assert r.status_code == 200 and _is_json(r), r.text
    body = r.json()
    assert body["error_msg"] == []
    labels, confidences = body["image_class"], body["class_confidence"]
    if count is None:
        assert isinstance(labels, str) and isinstance(confidences, float)
        labels, confidences = [labels], [confidences]
    assert isinstance(labels, list) and isinstance(confidences, list)
    assert len(labels) == len(confidences) == (count or 1)
    assert all(isinstance(c, float) and 0.0 <= c <= 1.0 for c in confidences)
    for label, confidence in zip(labels, confidences, strict=True):
        assert label in (*CATEGORIES.values(), NO_CATEGORY)
        assert confidence >= 0.5 or label == NO_CATEGORY  # the documented rule (a flagged anomaly too is "No")
    return list(zip(labels, confidences, strict=True))


def _predict_refused(r: httpx.Response) -> list[str]:
    assert r.status_code == 400 and _is_json(r), r.text
    errors = r.json()["error_msg"]
    assert isinstance(errors, list) and errors and all(isinstance(m, str) for m in errors)
    return list(errors)


def test_temple_server_as_documented(
    sqlite_api, clothing_subset: Path, lite0_default_bundle: bytes, tmp_path: Path
) -> None:
    c = sqlite_api.client
    r = c.put(f"{API}/models/default", files={"file": ("default.zip", lite0_default_bundle, "application/zip")})
    assert r.status_code in (200, 201), r.text

    # Before any data: make_model and predict of an unknown temple are 400s with their documented shapes.
    made = _made(c.post("/api/make_model", json={"temple_id": "999999", "forceful": False}), 400)
    assert not any(made[f] for f in FLAGS)
    image = sorted((clothing_subset / "train" / "hat").glob("*.jpg"))[0]
    one = {"temple_id": "999999", "image": b64(image), "image_name": "image1", "image_type": "jpg"}
    assert "999999" in _predict_refused(c.post("/api/predict", json=one))[0]

    # save_data: training and testing data per category (step 6 of the guide), answered only {"error_msg": "All OK"}.
    test_images: dict[str, list[Path]] = {}
    for cls, category in CATEGORIES.items():
        for path in sorted((clothing_subset / "train" / cls).glob("*.jpg"))[:TRAIN]:
            r = c.post("/api/save_data", json=_save_body(path, "train", category))
            assert r.status_code == 200 and _is_json(r) and r.json() == {"error_msg": "All OK"}, r.text
        test_images[category] = sorted((clothing_subset / "validation" / cls).glob("*.jpg"))[:TEST]
        for path in test_images[category]:
            r = c.post("/api/save_data", json=_save_body(path, "test", category))
            assert r.status_code == 200 and r.json() == {"error_msg": "All OK"}, r.text
    # "PNG" as the image_type table shows it, with a PNG image.
    extra = sorted((clothing_subset / "train" / "hat").glob("*.jpg"))[TRAIN]
    png = {**_save_body(extra, "train", "Door closed"), "image": _png_b64(extra), "image_type": "PNG"}
    assert c.post("/api/save_data", json=png).json() == {"error_msg": "All OK"}
    # As the original took them: a numeric temple_id, train_test in any case, a dotted image_type.
    loose = sorted((clothing_subset / "train" / "shoes").glob("*.jpg"))[TRAIN]
    body = {**_save_body(loose, "TEST", "None of the categories"), "temple_id": int(TEMPLE_ID), "image_type": ".jpg"}
    assert c.post("/api/save_data", json=body).json() == {"error_msg": "All OK"}

    # A failed save says why in error_msg (a 400 here, the original's 500: docs/COMPAT.md).
    bad = _save_body(extra, "train", "Door closed")
    assert "image" in _save_refused(c.post("/api/save_data", json={**bad, "image": "not base64!"}))
    assert "train_test" in _save_refused(c.post("/api/save_data", json={**bad, "train_test": "both"}))
    assert "JSON" in _save_refused(c.post("/api/save_data", data=bad))  # form-encoded: the routes take JSON only
    # No token: 401 from the hub's body guard, before the image is read (docs/COMPAT.md, Authentication).
    anonymous = c.post("/api/save_data", json=bad, headers={"Authorization": ""})
    assert anonymous.status_code == 401 and _is_json(anonymous), anonymous.text

    # make_model trains (a trainer worker takes the job) and answers once done: 200, [] and every flag true.
    worker = trainer_worker(sqlite_api, tmp_path)
    thread = threading.Thread(target=worker.run, kwargs={"max_jobs": 2}, daemon=True)
    thread.start()
    made = _made(c.post("/api/make_model", json={"temple_id": TEMPLE_ID, "forceful": False}), 200)
    assert all(made[f] for f in FLAGS), made
    # A model exists: forceful False is an error and nothing runs; forceful True trains again.
    made = _made(c.post("/api/make_model", json={"temple_id": TEMPLE_ID, "forceful": False}), 400)
    assert "forceful" in made["error_msg"][0] and not any(made[f] for f in FLAGS)
    made = _made(c.post("/api/make_model", json={"temple_id": TEMPLE_ID, "forceful": True}), 200)
    assert all(made[f] for f in FLAGS), made
    thread.join(timeout=60)

    # predict: one image → single values in the client's own category names.
    test_image = test_images["Door closed"][0]
    one = {"temple_id": TEMPLE_ID, "image": b64(test_image), "image_name": "image1", "image_type": "jpg"}
    _predicted(c.post("/api/predict", json=one), None)
    _predicted(c.post("/api/predict/", json=one), None)  # a trailing slash: redirected with its body (307)
    # A list of images (with lists of names and types) → lists, in order; the trained images come back as
    # their categories, spaces and all.
    trained = [sorted((clothing_subset / "train" / cls).glob("*.jpg"))[0] for cls in CATEGORIES]
    many = {
        "temple_id": TEMPLE_ID,
        "image": [b64(p) for p in trained],
        "image_name": [p.stem for p in trained],
        "image_type": ["jpg"] * len(trained),
    }
    answers = _predicted(c.post("/api/predict", json=many), len(trained))
    for (label, _p), category in zip(answers, CATEGORIES.values(), strict=True):
        assert label in (category, NO_CATEGORY), answers
    assert any(label != NO_CATEGORY for label, _p in answers), answers
    # image_name and image_type are only logged / unused: a list without them answers the same.
    bare = c.post("/api/predict", json={"temple_id": TEMPLE_ID, "image": many["image"]})
    assert [label for label, _p in _predicted(bare, len(trained))] == [label for label, _p in answers]
    assert _predict_refused(c.post("/api/predict", json={**one, "image": "%%%"}))

    # GET /cv on this classifier names the groups as the client did.
    cfg = sqlite_api.services.settings.compat
    cfg.cv_site, cfg.cv_classifier, cfg.cv_roots = TEMPLE_ID, "temple", [str(clothing_subset)]
    r = c.get(f"/cv?{test_image}:2")
    assert r.status_code == 200 and len(r.json()) == 2 and set(r.json()) <= set(CATEGORIES.values()), r.text


def test_cv_tool_as_documented(
    sqlite_api, clothing_subset: Path, lite0_default_bundle: bytes, tmp_path: Path, web: LoopbackServer
) -> None:
    """``/cv?/full/path.jpg``, ``/cv?/full/path.jpg:3``, the same with an http address; JSON back."""
    c = sqlite_api.client
    r = c.put(f"{API}/models/default", files={"file": ("default.zip", lite0_default_bundle, "application/zip")})
    assert r.status_code in (200, 201), r.text
    assert c.post(f"{API}/sites", json={"name": "animals"}).status_code == 201
    assert c.post(f"{API}/sites/animals/classifiers", json={"name": "save"}).status_code == 201
    root = tmp_path / "Projects" / "save"
    folder = root / "animals" / "bison pictures"  # a space in the path, sent unencoded as the examples are
    folder.mkdir(parents=True)
    image = folder / "4a11160cd7.jpg"
    shutil.copyfile(sorted((clothing_subset / "train" / "hat").glob("*.jpg"))[0], image)
    cfg = sqlite_api.services.settings.compat
    cfg.cv_site, cfg.cv_classifier, cfg.cv_roots = "animals", "save", [str(root)]

    def ranked(r: httpx.Response, count: int | None) -> list[str]:
        assert r.status_code == 200 and _is_json(r), r.text
        top = r.json()
        assert isinstance(top, dict) and all(isinstance(k, str) and isinstance(v, float) for k, v in top.items())
        assert list(top.values()) == sorted(top.values(), reverse=True)
        assert len(top) == count if count else len(top) > 3
        return list(top)

    everything = ranked(c.get(f"/cv?{image}"), None)
    assert ranked(c.get(f"/cv?{image}:3"), 3) == everything[:3]
    web.images["4a11160cd7.jpg"] = image.read_bytes()
    url = web.image_url("4a11160cd7.jpg")
    assert ranked(c.get(f"/cv?{url}"), None) == everything
    assert ranked(c.get(f"/cv?{url}:3"), 3) == everything[:3]
    assert ranked(c.get(f"/cv?{image}:1"), 1) == everything[:1]

    # Refusals answer JSON with the reason; a missing file is a 4xx, not a 500.
    for query in (f"{folder}/missing.jpg:3", "", f"{url}:0"):
        r = c.get(f"/cv?{query}")
        assert 400 <= r.status_code < 500 and _is_json(r) and isinstance(r.json()["error_msg"], str), r.text
    assert c.get(f"/cv?{image}:3", headers={"Authorization": ""}).status_code == 401
