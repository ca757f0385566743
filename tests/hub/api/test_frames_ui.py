"""Frames arriving through the real ingest worker, their images and thumbnails, ingest stats, the web page."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.publish as mqtt_publish
from apihelpers import bundle_zip, dataset_zip, wait_for

from camfleet_contract.envelope import encode_frame, new_header
from camfleet_contract.images import probe_image
from camfleet_contract.messages import AgentStatus, Prediction, to_json

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"


def _publish_frame(mosquitto, topics, jpeg: bytes, camera: str, predictions=()) -> str:  # type: ignore[no-untyped-def]
    _fmt, w, h = probe_image(jpeg)
    header = new_header("agent-1", "shop", camera, jpeg, w, h, predictions=predictions)
    mqtt_publish.single(
        topics.frame("shop", camera), encode_frame(header, jpeg), qos=1, hostname=mosquitto.host, port=mosquitto.port
    )
    return header.frame_id


def test_frames_stats_and_web_page(
    hub_factory, sqlite_url: str, mosquitto, clothing_subset: Path, tmp_path: Path, trainer_key: str
) -> None:
    api = hub_factory(sqlite_url, ingest=True)
    c, topics = api.client, api.services.topics
    c.post(f"{API}/sites", json={"name": "shop"})
    c.post(f"{API}/sites/shop/cameras", json={"name": "door"})
    c.post(f"{API}/sites/shop/cameras", json={"name": "till"})
    jpegs = [p.read_bytes() for p in sorted((clothing_subset / "validation" / "hat").glob("*.jpg"))[:3]]

    first = _publish_frame(mosquitto, topics, jpegs[0], "door")
    second = _publish_frame(
        mosquitto, topics, jpegs[1], "till", predictions=[Prediction(label="hat", probability=0.875)]
    )
    third = _publish_frame(mosquitto, topics, jpegs[2], "door")
    mqtt_publish.single(
        topics.frame("shop", "door"), b"NOPE" + b"x" * 100, qos=1, hostname=mosquitto.host, port=mosquitto.port
    )
    status = AgentStatus(state="online", agent="agent-1", site="shop", models={"clothes": "1"}, cameras=["door"])
    mqtt_publish.single(
        topics.status("shop", "agent-1"),
        to_json(status),
        qos=1,
        retain=True,
        hostname=mosquitto.host,
        port=mosquitto.port,
    )

    frames = wait_for(lambda: len(c.get(f"{API}/frames").json()) == 3 and c.get(f"{API}/frames").json(), "3 frames")
    assert {f["frame_id"] for f in frames} == {first, second, third}
    assert [f["captured_at"] for f in frames] == sorted((f["captured_at"] for f in frames), reverse=True)
    door = c.get(f"{API}/frames", params={"site": "shop", "camera": "door"}).json()
    assert {f["frame_id"] for f in door} == {first, third}
    assert len(c.get(f"{API}/frames", params={"limit": 1}).json()) == 1
    assert c.get(f"{API}/frames", params={"site": "nowhere"}).status_code == 404
    till = next(f for f in frames if f["frame_id"] == second)
    assert till["predictions"] == [{"label": "hat", "probability": 0.875}]

    image = c.get(f"{API}/frames/{first}/image")
    assert image.status_code == 200 and image.content == jpegs[0]
    thumb = c.get(f"{API}/frames/{first}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(probe_image(thumb.content)[1:]) <= 256
    assert c.get(f"{API}/frames/{first}/thumbnail").content == thumb.content

    dead = wait_for(lambda: c.get(f"{API}/ingest/dead-letters").json(), "a dead letter")
    assert dead[0]["reason"] == "bad_magic" and dead[0]["topic"] == topics.frame("shop", "door")
    stats = c.get(f"{API}/ingest/stats").json()
    assert stats["frames"] == 3 and stats["worker"]["accepted"] == 3
    assert stats["dead_letters_by_reason"] == {"bad_magic": 1}
    assert c.get(f"{API}/ingest/dead-letters", params={"reason": "other"}).json() == []

    # a classifier with data, a job and two model versions, for the page
    c.post(f"{API}/sites/shop/classifiers", json={"name": "clothes"})
    data = dataset_zip(clothing_subset / "train", per_class=2)
    c.post(f"{CLF}/import?wait=true", files={"file": ("d.zip", data, "application/zip")})
    models = []
    for seed in (1, 2):
        job_id = c.post(f"{CLF}/jobs", json={}).json()["id"]
        c.post(f"{API}/jobs/claim", json={"worker": "t1"})
        zipped = bundle_zip(tmp_path, trainer_key, model_seed=seed)
        models.append(
            c.post(f"{API}/jobs/{job_id}/result", files={"file": ("b.zip", zipped, "application/zip")}).json()
        )
    c.post(f"{CLF}/jobs", json={})
    wait_for(lambda: c.get("/").text.count("agent-1") > 0, "the agent on the page")

    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "location.reload()" in html and "}, 10 * 1000)" in html  # refreshes, but never while a form is used
    assert "Site shop" in html and "Classifier clothes" in html
    assert f"/api/v1/frames/{first}/thumbnail" in html and "hat 88 %" in html
    assert "dress" in html and "/api/v1/images/" in html  # groups with sample thumbnails
    assert f'action="/ui/models/{models[0]["id"]}/promote"' in html and "candidate" in html
    assert "queued" in html and "succeeded" in html
    assert "agent-1" in html and "clothes v1" in html
    assert c.get("/static/style.css").status_code == 200

    r = c.post(f"/ui/models/{models[1]['id']}/promote", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert c.get(f"{API}/models/{models[1]['id']}").json()["status"] == "production"
    assert f'action="/ui/models/{models[1]["id"]}/promote"' not in c.get("/").text
