"""The older tools' endpoints replayed as their documentation sends them: the temple classifier server's
``/api/save_data``, ``/api/make_model`` and ``/api/predict``, and the dataset tool's ``GET /cv?PATH[:HOW_MANY]``.

A real trainer worker (quick mode, in a thread, every call through the hub's routes) does make_model's training.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import httpx
from sqlalchemy import func, select

from camfleet_hub.compat.schemas import NO_CATEGORY, NONE_OF_THE_CATEGORIES
from camfleet_hub.serving.models import PredictionLog
from camfleet_hub.training import jobs
from camfleet_hub.training.models import TrainingJob
from camfleet_trainer.client import HubClient
from camfleet_trainer.config import TrainerSettings
from camfleet_trainer.worker import Worker

API = "/api/v1"
TEMPLE = "temple-1"
CLASSES = ("dress", "hat", "shoes")
FLAGS = (
    "got_training_data_flag",
    "got_testing_data_flag",
    "made_model_architecture_flag",
    "trained_model_flag",
    "tested_model_flag",
    "saved_model_flag",
)


def b64(path: Path) -> str:
    """The file as the old clients send it: base64 text."""
    return base64.b64encode(path.read_bytes()).decode()


def trainer_worker(api, tmp_path: Path, **settings: object) -> Worker:  # type: ignore[no-untyped-def]
    """A real trainer worker (quick mode, CPU) whose every hub call goes through the test app."""
    base = str(api.client.base_url)

    def through_the_app(request: httpx.Request) -> httpx.Response:
        r = api.client.request(request.method, str(request.url), headers=request.headers, content=request.read())
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)

    client = HubClient(base, token=api.admin_token, retries=0, transport=httpx.MockTransport(through_the_app))
    config = TrainerSettings(
        hub_url=base, worker="compat-worker", cache_dir=tmp_path / "cache", device="cpu", **settings
    )
    return Worker(config, client=client)


def _save(c, path: Path, split: str, category: str):  # type: ignore[no-untyped-def]
    body = {
        "temple_id": TEMPLE,
        "train_test": split,
        "category": category,
        "image": b64(path),
        "image_type": "jpg",
        "image_name": path.name,
    }
    return c.post("/api/save_data", json=body)


def test_temple_server_requests_train_test_and_predict(
    api, clothing_subset: Path, lite0_default_bundle: bytes, tmp_path: Path
) -> None:
    c = api.client
    r = c.put(f"{API}/models/default", files={"file": ("default.zip", lite0_default_bundle, "application/zip")})
    assert r.status_code in (200, 201), r.text

    # save_data: train images and a user-supplied test set, per category.
    test_files: dict[str, list[Path]] = {}
    for cls in CLASSES:
        files = sorted((clothing_subset / "train" / cls).glob("*.jpg"))
        for f in files[:6]:
            r = _save(c, f, "train", cls)
            assert r.status_code == 200, r.text
            assert r.json()["error_msg"] == "All OK"
        test_files[cls] = sorted((clothing_subset / "validation" / cls).glob("*.jpg"))[:2]
        for f in test_files[cls]:
            r = _save(c, f, "test", cls)
            assert r.status_code == 200 and r.json()["error_msg"] == "All OK", r.text

    # Bad input is a 4xx in the old shape, never a 500.
    bad = {"temple_id": TEMPLE, "train_test": "train", "category": "hat", "image": "not base64!", "image_name": "x"}
    r = c.post("/api/save_data", json=bad)
    assert r.status_code == 400 and "image" in r.json()["error_msg"]
    r = c.post("/api/save_data", json={**bad, "image": b64(test_files["hat"][0]), "train_test": "both"})
    assert r.status_code == 400 and "train_test" in r.json()["error_msg"]
    r = c.post("/api/save_data", json={**bad, "image": base64.b64encode(b"plain text").decode()})
    assert r.status_code == 400 and r.json()["error_msg"]
    anonymous = c.post("/api/save_data", json=bad, headers={"Authorization": ""})
    assert anonymous.status_code == 401

    # predict before any model: 400 with the reason in error_msg.
    one = {"temple_id": TEMPLE, "image": b64(test_files["hat"][0]), "image_name": "h.jpg", "image_type": "jpg"}
    r = c.post("/api/predict", json=one)
    assert r.status_code == 400 and r.json()["error_msg"] and "make_model" in r.json()["error_msg"][0]

    # make_model trains synchronously while a trainer worker takes the job.
    worker = trainer_worker(api, tmp_path)
    ran: list[int] = []
    thread = threading.Thread(target=lambda: ran.append(worker.run(max_jobs=1)), daemon=True)
    thread.start()
    r = c.post("/api/make_model", json={"temple_id": TEMPLE, "forceful": False})
    thread.join(timeout=600)
    assert r.status_code == 200, r.text
    made = r.json()
    assert made["error_msg"] == []
    assert all(made[f] is True for f in FLAGS), made
    assert made["test_images"] == 6 and 0.0 <= made["test_accuracy"] <= 1.0
    assert ran == [1]
    # The test images were never trained on: the job's dataset holds only the 18 train images.
    with api.services.sessions() as session:
        job = session.get(TrainingJob, made["job_id"])
        assert job is not None
        trained = jobs.dataset(session, job).images
        assert len(trained) == 18

    # A second make_model without forceful keeps the model: 400, nothing trained.
    r = c.post("/api/make_model", json={"temple_id": TEMPLE, "forceful": False})
    assert r.status_code == 400
    assert r.json()["error_msg"] and "forceful" in r.json()["error_msg"][0]
    assert not any(r.json()[f] for f in FLAGS)

    # predict: one image → single values; a list → lists, in order.
    r = c.post("/api/predict", json=one)
    assert r.status_code == 200, r.text
    single = r.json()
    assert single["error_msg"] == []
    assert isinstance(single["image_class"], str) and isinstance(single["class_confidence"], float)
    assert single["image_class"] in (*CLASSES, NO_CATEGORY)
    many = {
        "temple_id": TEMPLE,
        "image": [b64(test_files["shoes"][0]), b64(test_files["dress"][0])],
        "image_name": ["s.jpg", "d.jpg"],
        "image_type": ["jpg", "jpg"],
    }
    r = c.post("/api/predict", json=many)
    assert r.status_code == 200, r.text
    listed = r.json()
    assert len(listed["image_class"]) == 2 and len(listed["class_confidence"]) == 2
    # The original's rule: under min_confidence the answer is "No category (Anomaly)".
    r = c.post("/api/predict", json={**one, "min_confidence": 1.0})
    assert r.json()["image_class"] == NO_CATEGORY
    r = c.post("/api/predict", json={**one, "image": "%%%"})
    assert r.status_code == 400 and r.json()["error_msg"]
    r = c.post("/api/predict", json={**many, "image_name": ["only-one.jpg"]})
    assert r.status_code == 400 and "image_name" in r.json()["error_msg"][0]

    # Every prediction is logged with all probabilities, the model version, the caller and the image name.
    with api.services.sessions() as session:
        rows = list(session.scalars(select(PredictionLog).order_by(PredictionLog.id)))
        assert [r.image_name for r in rows] == ["h.jpg", "s.jpg", "d.jpg", "h.jpg"]
        assert all(set(r.probabilities) == set(CLASSES) for r in rows)
        assert all(r.model_version == made["model_version"] and r.caller == "token:tests" for r in rows)
        assert abs(sum(rows[0].probabilities.values()) - 1.0) < 1e-4
        assert session.scalar(select(func.count(PredictionLog.id))) == 4


def test_none_of_the_categories_is_trained_and_answered_by_its_name(
    api, clothing_subset: Path, lite0_default_bundle: bytes, tmp_path: Path
) -> None:
    """The temple server's advice: a category "None of the categories" of other images. Its group is marked none of
    the above, so the model flags such images, and predict answers the category's own name as the original did."""
    c = api.client
    r = c.put(f"{API}/models/default", files={"file": ("default.zip", lite0_default_bundle, "application/zip")})
    assert r.status_code in (200, 201), r.text
    categories = {"dress": "dress", "hat": "hat", "shoes": NONE_OF_THE_CATEGORIES}
    for folder, category in categories.items():
        train = sorted((clothing_subset / "train" / folder).glob("*.jpg"))[:6]
        test = sorted((clothing_subset / "validation" / folder).glob("*.jpg"))[:1]
        for split, files in (("train", train), ("test", test)):
            for f in files:
                assert _save(c, f, split, category).json()["error_msg"] == "All OK"
    groups = {g["name"]: g for g in c.get(f"{API}/sites/{TEMPLE}/classifiers/temple/groups").json()}
    assert groups["None.20of.20the.20categories"]["none_of_the_above"] is True
    assert not groups["hat"]["none_of_the_above"]

    worker = trainer_worker(
        api, tmp_path, quick_backbones=["tf_efficientnet_lite0"], quick_view="std", quick_pooling="mean"
    )
    thread = threading.Thread(target=lambda: worker.run(max_jobs=1), daemon=True)
    thread.start()
    r = c.post("/api/make_model", json={"temple_id": TEMPLE, "forceful": False})
    thread.join(timeout=600)
    assert r.status_code == 200 and r.json()["error_msg"] == [], r.text

    shoes = sorted((clothing_subset / "validation" / "shoes").glob("*.jpg"))
    hats = sorted((clothing_subset / "validation" / "hat").glob("*.jpg"))
    body = {"temple_id": TEMPLE, "image": [b64(p) for p in shoes + hats], "image_name": [p.name for p in shoes + hats]}
    answers = c.post("/api/predict", json={**body, "min_confidence": 0.0}).json()["image_class"]
    assert answers[: len(shoes)].count(NONE_OF_THE_CATEGORIES) >= len(shoes) - 1, answers
    assert NONE_OF_THE_CATEGORIES not in answers[len(shoes) :], answers
    # The REST API says what an agent says: a none-of-the-above class on top is an anomaly.
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in shoes]
    results = c.post(f"{API}/classify", data={"site": TEMPLE, "classifier": "temple"}, files=files).json()["results"]
    none = [x for x in results if x["label"] == "None.20of.20the.20categories"]
    assert none and all(x["anomaly"] and x["anomaly_score"] == 1.0 for x in none), results
    # The original's own answer for such images, sent back as a category, means the same.
    body = {"temple_id": "temple-2", "train_test": "train", "category": "no category (anomaly)", "image": b64(shoes[0])}
    assert c.post("/api/save_data", json=body).json()["error_msg"] == "All OK"
    (group,) = c.get(f"{API}/sites/temple-2/classifiers/temple/groups").json()
    assert group["none_of_the_above"] is True


def test_cv_path_and_url_forms(sqlite_api, clothing_subset: Path, lite0_default_bundle: bytes) -> None:
    """``/cv?PATH``, ``/cv?PATH:HOW_MANY`` and the parameter form, on the ImageNet default (no training)."""
    c = sqlite_api.client
    r = c.put(f"{API}/models/default", files={"file": ("default.zip", lite0_default_bundle, "application/zip")})
    assert r.status_code in (200, 201), r.text
    assert c.post(f"{API}/sites", json={"name": "shop"}).status_code == 201
    assert c.post(f"{API}/sites/shop/classifiers", json={"name": "clothes"}).status_code == 201
    image = sorted((clothing_subset / "train" / "hat").glob("*.jpg"))[0]

    r = c.get(f"/cv?{image}:3")
    assert r.status_code == 400 and "cv_site" in r.json()["error_msg"]  # no classifier configured yet
    cfg = sqlite_api.services.settings.compat
    cfg.cv_site, cfg.cv_classifier = "shop", "clothes"
    r = c.get(f"/cv?{image}:3")
    assert r.status_code == 400 and "cv_roots" in r.json()["error_msg"]  # local paths are off by default
    cfg.cv_roots = [str(clothing_subset / "train")]

    r = c.get(f"/cv?{image}:3")
    assert r.status_code == 200, r.text
    top = r.json()
    assert len(top) == 3 and all(isinstance(v, float) for v in top.values())
    assert list(top.values()) == sorted(top.values(), reverse=True)
    r = c.get(f"/cv?{image}")
    assert r.status_code == 200 and len(r.json()) > 3  # every group of the ImageNet default
    assert list(r.json())[:3] == list(top)
    r = c.get("/cv", params={"path": str(image), "how_many": "2", "site": "shop", "classifier": "clothes"})
    assert r.status_code == 200 and list(r.json()) == list(top)[:2]

    outside = clothing_subset / "validation" / "hat"
    r = c.get(f"/cv?{sorted(outside.glob('*.jpg'))[0]}:2")
    assert r.status_code == 400 and "not a file inside compat.cv_roots" in r.json()["error_msg"]
    # a missing file, inside or outside the roots, answers the same: no probing of the hub's disk
    for probe in (image.parent / "missing.jpg", Path("/etc/missing-file"), Path("/etc/hostname"), image.parent):
        r = c.get("/cv", params={"path": str(probe), "site": "shop", "classifier": "clothes"})
        assert (
            r.status_code == 400
            and r.json()["error_msg"] == f"path={str(probe)!r} is not a file inside compat.cv_roots"
        )
    r = c.get("/cv?http://127.0.0.1:1/x.jpg:2")  # the URL-import guard: a refused fetch is a 400, not a 500
    assert r.status_code == 400 and r.json()["error_msg"].startswith("url:")
    r = c.get(f"/cv?{image}:0")
    assert r.status_code == 400
