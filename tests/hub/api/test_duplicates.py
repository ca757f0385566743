"""Embeddings under the real ImageNet default (lite0) and duplicates: stored once per blob, back-filled, exact and
near duplicates caught at import, listed as pairs, resolved with "keep one"."""

from __future__ import annotations

from pathlib import Path

import cv2
from apihelpers import dataset_zip, wait_for
from sqlalchemy import func, select

from camfleet_contract.images import decode_image, encode_jpeg
from camfleet_hub.datasets.models import Embedding, Image
from camfleet_hub.training import jobs
from camfleet_hub.training.models import ModelVersion, TrainingJob

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"


def _count_embeddings(api, sha: str | None = None) -> int:  # type: ignore[no-untyped-def]
    with api.services.sessions() as session:
        query = select(func.count()).select_from(Embedding)
        if sha is not None:
            query = query.where(Embedding.sha256 == sha)
        return int(session.scalar(query) or 0)


def _reencoded(data: bytes, quality: int) -> bytes:
    return encode_jpeg(decode_image(data), quality)


def _items(client, job_id: int) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return client.get(f"{API}/imports/{job_id}/items", params={"limit": 1000}).json()["items"]  # type: ignore[no-any-return]


def test_embeddings_and_duplicates_with_the_real_default_model(
    api, clothing_subset: Path, lite0_default_bundle: bytes
) -> None:
    c = api.client
    assert c.post(f"{API}/sites", json={"name": "shop"}).status_code == 201
    assert c.post(f"{API}/sites/shop/classifiers", json={"name": "clothes"}).status_code == 201
    # images that arrive before any default model exists get no embedding yet ...
    data = dataset_zip(clothing_subset / "train", per_class=3, classes=("dress", "hat"))
    first = c.post(f"{CLF}/import?wait=true", files={"file": ("d.zip", data, "application/zip")}).json()
    assert first["counts"]["imported"] == 6
    assert _count_embeddings(api) == 0
    assert c.get(f"{CLF}/duplicates").json() == {"pairs": [], "total": 0, "max_equal_distance": 0.05, "embedded": False}

    # ... and are back-filled once the default is uploaded
    r = c.put(f"{API}/models/default", files={"file": ("default.zip", lite0_default_bundle, "application/zip")})
    assert r.status_code == 200, r.text
    wait_for(lambda: _count_embeddings(api) == 6, "the back-fill to embed the 6 images", timeout_s=120)
    with api.services.sessions() as session:
        model_sha = session.scalar(select(ModelVersion.sha256).where(ModelVersion.classifier_id.is_(None)))
        rows = session.scalars(select(Embedding)).all()
    assert {e.model for e in rows} == {model_sha} and {e.dim for e in rows} == {1280}
    assert all(len(e.vector) == 2 * 1280 for e in rows)  # float16

    dress = sorted((clothing_subset / "train" / "dress").glob("*.jpg"))
    original = dress[0].read_bytes()
    copy = _reencoded(original, 70)  # the same photo saved again: other bytes, nearly the same pixels
    rgb = decode_image(dress[1].read_bytes())
    small = encode_jpeg(cv2.resize(rgb, (rgb.shape[1] * 3 // 4, rgb.shape[0] * 3 // 4)), 90)  # a resized copy
    distinct = sorted((clothing_subset / "validation" / "dress").glob("*.jpg"))[0].read_bytes()
    files = [
        ("files", ("copy.jpg", copy, "image/jpeg")),
        ("files", ("exact.jpg", dress[2].read_bytes(), "image/jpeg")),
        ("files", ("other.jpg", distinct, "image/jpeg")),
        ("files", ("small.jpg", small, "image/jpeg")),
    ]
    job = c.post(f"{CLF}/import?wait=true", files=files, data={"group": "dress"}).json()
    assert job["status"] == "succeeded", job
    by = {i["name"]: i for i in _items(c, job["id"])}
    images = {i["original_name"]: i for i in c.get(f"{CLF}/images", params={"limit": 100}).json()}
    assert by["exact.jpg"]["outcome"] == "duplicate"
    assert by["other.jpg"]["outcome"] == "imported" and images["other.jpg"]["status"] == "GROUP"
    near = by["copy.jpg"]
    assert near["outcome"] == "near_duplicate", near
    assert near["similar_image_id"] == images[f"dress/{dress[0].name}"]["id"] and 0 <= near["distance"] < 0.05
    assert images["copy.jpg"]["status"] == "NEW"  # left in the inbox for a person to decide

    # a person confirms the copy as a dress: the trainer's dataset gives both one near-duplicate cluster
    moved = c.patch(f"{API}/images/{near['image_id']}", json={"status": "GROUP", "group": "dress"})
    assert moved.status_code == 200, moved.text
    job = c.post(f"{CLF}/jobs", json={"mode": "quick"}).json()
    dataset = {i["id"]: i["cluster"] for i in c.get(f"{API}/jobs/{job['id']}/dataset").json()["images"]}
    original_id = near["similar_image_id"]
    assert dataset[near["image_id"]] == dataset[original_id] == min(near["image_id"], original_id)
    others = [cluster for image_id, cluster in dataset.items() if image_id not in (near["image_id"], original_id)]
    assert len(set(others)) == len(others) and original_id not in others  # every other image on its own
    # Those links came from the classifier's index, whose pairs are now cached; a search from scratch agrees.
    with api.services.sessions() as session:
        row = session.get(TrainingJob, job["id"])
        assert row is not None
        scratch = {i.id: i.cluster for i in jobs.dataset(session, row).images}
        index = api.services.near_indexes.get(session, row.classifier_id, model_sha)
    assert scratch == dataset and index.pairs_key is not None
    assert c.post(f"{API}/jobs/{job['id']}/cancel").status_code == 200

    # every blob embedded once, even when a second classifier imports the same bytes
    assert c.post(f"{API}/sites/shop/classifiers", json={"name": "second"}).status_code == 201
    other = c.post(
        f"{API}/sites/shop/classifiers/second/import?wait=true",
        files=[("files", ("o.jpg", original, "image/jpeg"))],
    ).json()
    assert other["counts"] == {"imported": 1}
    assert _count_embeddings(api, images[f"dress/{dress[0].name}"]["sha256"]) == 1
    with api.services.sessions() as session:
        blobs = session.scalar(select(func.count(func.distinct(Image.sha256))))
    assert _count_embeddings(api) == blobs

    # the pairs page shows it side by side; keep the original, drop the copy
    page = c.get(f"{CLF}/duplicates").json()
    assert page["embedded"] is True and page["total"] >= 1
    pair = next(
        p for p in page["pairs"] if {p["left"]["id"], p["right"]["id"]} == {near["image_id"], near["similar_image_id"]}
    )
    assert pair["kind"] == "near" and abs(pair["distance"] - near["distance"]) < 0.01
    assert (
        pair["left"]["thumbnail_url"].endswith("/thumbnail") and c.get(pair["left"]["thumbnail_url"]).status_code == 200
    )
    keep, drop = near["similar_image_id"], near["image_id"]
    r = c.post(f"{CLF}/duplicates/resolve", json={"keep": keep, "drop": [drop]})
    assert r.status_code == 200 and r.json() == {"kept": keep, "deleted": [drop]}
    assert c.get(f"{API}/images/{drop}").json()["status"] == "DELETED"
    after = c.get(f"{CLF}/duplicates").json()["pairs"]
    assert all(drop not in (p["left"]["id"], p["right"]["id"]) for p in after)
    # the dropped copy is never offered again
    again = c.post(f"{CLF}/import?wait=true", files=[("files", ("copy.jpg", copy, "image/jpeg"))]).json()
    assert again["counts"] == {"previously_deleted": 1}
    bad = c.post(f"{CLF}/duplicates/resolve", json={"keep": keep, "drop": [999999]})
    assert bad.status_code == 404

    # the threshold is the classifier's: at 0 nothing is near any more
    assert c.patch(f"{CLF}/duplicates", json={"max_equal_distance": 3}).status_code == 422
    assert c.patch(f"{CLF}/duplicates", json={"max_equal_distance": 0.0}).json() == {"max_equal_distance": 0.0}
    third = c.post(
        f"{CLF}/import?wait=true", files=[("files", ("q50.jpg", _reencoded(original, 50), "image/jpeg"))]
    ).json()
    assert third["counts"] == {"imported": 1}
    assert c.get(f"{CLF}/duplicates").json()["total"] == 0


def test_camera_frames_are_embedded_in_the_background(
    hub_factory, sqlite_url: str, mosquitto, clothing_subset: Path, lite0_default_bundle: bytes
) -> None:  # type: ignore[no-untyped-def]
    import paho.mqtt.publish as mqtt_publish

    from camfleet_contract.envelope import encode_frame, new_header
    from camfleet_contract.images import probe_image

    api = hub_factory(sqlite_url, ingest=True)
    c, topics = api.client, api.services.topics
    c.post(f"{API}/sites", json={"name": "shop"})
    c.post(f"{API}/sites/shop/cameras", json={"name": "door"})
    c.post(f"{API}/sites/shop/classifiers", json={"name": "clothes"})
    c.post(f"{API}/sites/shop/classifiers", json={"name": "lights"})
    r = c.put(f"{API}/models/default", files={"file": ("default.zip", lite0_default_bundle, "application/zip")})
    assert r.status_code == 200, r.text
    jpegs = [p.read_bytes() for p in sorted((clothing_subset / "validation" / "shoes").glob("*.jpg"))[:3]]
    for jpeg in jpegs:
        _fmt, w, h = probe_image(jpeg)
        header = new_header("agent-1", "shop", "door", jpeg, w, h)
        mqtt_publish.single(
            topics.frame("shop", "door"),
            encode_frame(header, jpeg),
            qos=1,
            hostname=mosquitto.host,
            port=mosquitto.port,
        )
    # each frame is a NEW image in both classifiers, and its blob gets one embedding
    wait_for(lambda: len(c.get(f"{CLF}/images", params={"status": "NEW"}).json()) == 3, "the frames in the inbox")
    wait_for(lambda: _count_embeddings(api) == 3, "the back-fill to embed the 3 frames", timeout_s=120)
    with api.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == 6
