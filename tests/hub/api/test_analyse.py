"""POST /sites/{site}/classifiers/{clf}/analyse on a real hub: the production model's probability of every group,
the anomaly explained, and the k nearest dataset images from the per-classifier index, kept current (not rebuilt)
as images are added, moved and deleted."""

from __future__ import annotations

from pathlib import Path

from apihelpers import bundle_zip, dataset_zip

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"
GROUPS = {"dress", "hat", "shoes"}


def _hub_with_dataset(client, root: Path, tmp_path: Path, key: str) -> dict:  # type: ignore[type-arg, no-untyped-def]
    """Default bundle first (imports embed inline under it), 3 images per group, then a promoted model."""
    default = bundle_zip(tmp_path, key, classes=["jersey", "sock", "cowboy_hat"], classifier="imagenet")
    assert client.put(f"{API}/models/default", files={"file": ("d.zip", default, "application/zip")}).status_code < 300
    client.post(f"{API}/sites", json={"name": "shop"})
    client.post(f"{API}/sites/shop/classifiers", json={"name": "clothes"})
    # The tests' tiny embedder finds many real photos "near-duplicates": keep only exact copies out.
    assert client.patch(f"{CLF}/duplicates", json={"max_equal_distance": 0.0}).status_code == 200
    data = dataset_zip(root / "train", per_class=3)
    r = client.post(f"{CLF}/import?wait=true", files={"file": ("d.zip", data, "application/zip")})
    assert r.status_code == 200, r.text
    job = client.post(f"{CLF}/jobs", json={})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    client.post(f"{API}/jobs/claim", json={"worker": "t1"})
    bundle = bundle_zip(tmp_path, key, model_seed=3)
    model = client.post(f"{API}/jobs/{job_id}/result", files={"file": ("b.zip", bundle, "application/zip")}).json()
    assert client.post(f"{API}/models/{model['id']}/promote").status_code == 200
    return model  # type: ignore[no-any-return]


def _upload(client, data: bytes, k: int | None = None):  # type: ignore[no-untyped-def]
    query = "" if k is None else f"?k={k}"
    return client.post(f"{CLF}/analyse{query}", files={"file": ("q.jpg", data, "image/jpeg")})


def test_analyse_dataset_image_and_upload(api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c = api.client
    model = _hub_with_dataset(c, clothing_subset, tmp_path, trainer_key)
    images = c.get(f"{CLF}/images?limit=100").json()
    assert len(images) == 9 and {i["group"] for i in images} == GROUPS
    first = images[0]

    r = c.post(f"{CLF}/analyse?k=4", json={"image_id": first["id"]})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["model"] == {"id": model["id"], "classifier": "clothes", "version": 1, "default": False}
    probs = a["probabilities"]
    assert {p["group"] for p in probs} == GROUPS
    assert abs(sum(p["probability"] for p in probs) - 1.0) < 1e-4
    assert [p["probability"] for p in probs] == sorted((p["probability"] for p in probs), reverse=True)
    assert (a["label"], a["probability"]) == (probs[0]["group"], probs[0]["probability"])
    anomaly = a["anomaly"]
    assert anomaly["anomaly"] == (anomaly["score"] > anomaly["threshold"])
    assert f"{anomaly['threshold']:.2f}" in anomaly["explanation"]
    assert ("Anomalous" if anomaly["anomaly"] else "Not anomalous") in anomaly["explanation"]
    near = a["neighbours"]
    assert a["k"] == 4 and len(near) == 4 and a["neighbours_note"] is None
    assert first["id"] not in {n["image_id"] for n in near}  # the analysed image is not its own neighbour
    assert [n["distance"] for n in near] == sorted(n["distance"] for n in near)
    by_id = {i["id"]: i for i in images}
    for n in near:
        assert n["group"] == by_id[n["image_id"]]["group"]
        assert c.get(n["thumbnail_url"]).status_code == 200
        assert c.get(n["url"]).json()["id"] == n["image_id"]

    # The same bytes uploaded: the stored image itself is the nearest, at distance ~0; default k is 8.
    content = c.get(f"{API}/images/{first['id']}/content").content
    up = _upload(c, content).json()
    assert up["image_id"] is None and up["k"] == 8 and len(up["neighbours"]) == 8
    assert up["neighbours"][0]["image_id"] == first["id"] and up["neighbours"][0]["distance"] < 1e-3
    assert up["probabilities"] == a["probabilities"]  # the same model on the same pixels


def test_neighbours_follow_add_move_delete(api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c = api.client
    _hub_with_dataset(c, clothing_subset, tmp_path, trainer_key)
    clf_id = c.get(CLF).json()["id"]
    default = api.services.embedder.current_model  # type: ignore[union-attr]
    with api.services.sessions() as session:
        index = api.services.near_indexes.get(session, clf_id, default(session))  # type: ignore[union-attr]
    images = c.get(f"{CLF}/images?limit=100").json()
    target = next(i for i in images if i["group"] == "dress")
    content = c.get(f"{API}/images/{target['id']}/content").content

    moved = c.patch(f"{API}/images/{target['id']}", json={"group": "hat"})
    assert moved.status_code == 200, moved.text
    top = _upload(c, content, k=3).json()["neighbours"][0]
    assert (top["image_id"], top["group"]) == (target["id"], "hat")

    deleted = c.patch(f"{API}/images/{target['id']}", json={"status": "DELETED"})
    assert deleted.status_code == 200, deleted.text
    after = _upload(c, content, k=50).json()
    assert target["id"] not in {n["image_id"] for n in after["neighbours"]}
    assert len(after["neighbours"]) == 8 and "only 8" in after["neighbours_note"]  # k over the dataset: said so

    extra = sorted((clothing_subset / "validation" / "shoes").glob("*.jpg"))[0]
    r = c.post(f"{CLF}/import?wait=true", files={"file": ("e.zip", _zip_of(extra), "application/zip")})
    assert r.status_code == 200, r.text
    added = next(i for i in c.get(f"{CLF}/images?limit=100").json() if i["original_name"] == f"shoes/{extra.name}")
    top = _upload(c, extra.read_bytes(), k=1).json()["neighbours"]
    assert [n["image_id"] for n in top] == [added["id"]] and top[0]["group"] == "shoes"
    with api.services.sessions() as session:  # added to the same index object: incremental, not rebuilt
        assert api.services.near_indexes.get(session, clf_id, default(session)) is index  # type: ignore[union-attr]


def _zip_of(path: Path) -> bytes:
    from apihelpers import make_zip

    return make_zip([(f"shoes/{path.name}", path.read_bytes())])


def test_analyse_refusals(api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c = api.client
    _hub_with_dataset(c, clothing_subset, tmp_path, trainer_key)
    c.post(f"{API}/sites/shop/classifiers", json={"name": "other"})
    image_id = c.get(f"{CLF}/images?limit=1").json()[0]["id"]
    for k in (0, 51):
        r = c.post(f"{CLF}/analyse?k={k}", json={"image_id": image_id})
        assert r.status_code == 422 and r.json()["detail"].startswith("k:"), r.text
    r = c.post(f"{API}/sites/shop/classifiers/other/analyse", json={"image_id": image_id})
    assert r.status_code == 404 and f"image_id={image_id}" in r.json()["detail"]
    r = c.post(f"{CLF}/analyse", json={"image_id": image_id, "extra": 1})
    assert r.status_code == 422 and "extra" in r.json()["detail"]
    r = c.post(f"{CLF}/analyse", files={"other": ("x.jpg", b"x", "image/jpeg")})
    assert r.status_code == 422 and "file" in r.json()["detail"]
    r = _upload(c, b"not an image")
    assert r.status_code == 422 and "q.jpg" in r.json()["detail"]
    r = c.post(f"{CLF}/analyse", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 422 and "content-type" in r.json()["detail"]
    assert c.post(f"{API}/sites/nowhere/classifiers/clothes/analyse", json={"image_id": 1}).status_code == 404


def test_classify_writes_prediction_log_rows(api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    from sqlalchemy import select

    from camfleet_hub.serving.models import PredictionLog

    c = api.client
    model = _hub_with_dataset(c, clothing_subset, tmp_path, trainer_key)
    paths = [sorted((clothing_subset / "validation" / g).glob("*.jpg"))[0] for g in ("hat", "dress")]
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    r = c.post(f"{API}/classify", data={"site": "shop", "classifier": "clothes"}, files=files)
    assert r.status_code == 200, r.text
    answered = r.json()["results"]
    with api.services.sessions() as session:
        rows = session.execute(select(PredictionLog).order_by(PredictionLog.id)).scalars().all()
        site_id = c.get(f"{API}/sites/shop").json()["id"]
        assert [row.image_name for row in rows] == [p.name for p in paths]
        for row, res in zip(rows, answered, strict=True):
            assert (row.site_id, row.classifier, row.route) == (site_id, "clothes", "classify")
            assert (row.model_id, row.model_version) == (model["id"], 1)
            assert row.caller == c.get(f"{API}/auth/me").json()["name"]  # the token that asked
            assert set(row.probabilities) == GROUPS and abs(sum(row.probabilities.values()) - 1.0) < 1e-4
            assert (row.label, row.anomaly) == (res["label"], res["anomaly"])
            assert abs(row.probability - res["probability"]) < 1e-6
            assert abs(row.anomaly_score - res["anomaly_score"]) < 1e-6
