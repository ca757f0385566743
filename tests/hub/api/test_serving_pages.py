"""Serving pages on a real hub: Try it (ImageNet default and a site classifier, logged), the Analysis page (bars of
every group, anomaly in words, k neighbours one click away), Outliers (checked against a brute-force computation
over the stored embeddings), the Errors view's bulk form, and a site's prediction Logs (filters, CSV, retention)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
from apihelpers import bundle_zip, dataset_zip
from sqlalchemy import select

from camfleet_hub.core.db.types import utcnow
from camfleet_hub.datasets.embeddings import load_vectors
from camfleet_hub.datasets.models import Group, Image, ImageStatus
from camfleet_hub.serving import outliers
from camfleet_hub.serving.models import PredictionLog
from camfleet_hub.serving.ranking import SCORE_DTYPE
from camfleet_hub.serving.service import class_list_id

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"
UI = "/ui/sites/shop/classifiers/clothes"
GROUPS = {"dress", "hat", "shoes"}
DEFAULT_CLASSES = ["jersey", "sock", "cowboy_hat"]


def _default(client, tmp_path: Path, key: str) -> None:  # type: ignore[no-untyped-def]
    default = bundle_zip(tmp_path, key, classes=DEFAULT_CLASSES, classifier="imagenet")
    assert client.put(f"{API}/models/default", files={"file": ("d.zip", default, "application/zip")}).status_code < 300


def _dataset(client, root: Path, tmp_path: Path, key: str, train: bool = True) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    """Default bundle (imports embed under it), site shop, classifier clothes, 3 images per group; a promoted model."""
    _default(client, tmp_path, key)
    client.post(f"{API}/sites", json={"name": "shop"})
    client.post(f"{API}/sites/shop/classifiers", json={"name": "clothes"})
    assert client.patch(f"{CLF}/duplicates", json={"max_equal_distance": 0.0}).status_code == 200
    r = client.post(f"{CLF}/import?wait=true", files={"file": ("d.zip", dataset_zip(root / "train", 3), "x/zip")})
    assert r.status_code == 200, r.text
    if train:
        job = client.post(f"{CLF}/jobs", json={}).json()
        client.post(f"{API}/jobs/claim", json={"worker": "t1"})
        bundle = bundle_zip(tmp_path, key, model_seed=3)
        model = client.post(f"{API}/jobs/{job['id']}/result", files={"file": ("b.zip", bundle, "application/zip")})
        assert client.post(f"{API}/models/{model.json()['id']}/promote").status_code == 200
    return client.get(f"{CLF}/images?limit=100").json()  # type: ignore[no-any-return]


def _jpeg(client, image_id: int) -> bytes:  # type: ignore[no-untyped-def]
    return client.get(f"{API}/images/{image_id}/content").content  # type: ignore[no-any-return]


def test_try_it_default_and_classifier(sqlite_api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c = sqlite_api.client
    images = _dataset(c, clothing_subset, tmp_path, trainer_key)
    page = c.get("/ui/try")
    assert page.status_code == 200 and 'value="shop/clothes"' in page.text and 'data-can-label="1"' in page.text
    data = _jpeg(c, images[0]["id"])

    r = c.post("/ui/try/classify", files={"file": ("a.jpg", data, "image/jpeg")}, data={"target": ""})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["model"]["default"] is True and {t["label"] for t in a["top"]} == set(DEFAULT_CLASSES)
    assert [t["probability"] for t in a["top"]] == sorted((t["probability"] for t in a["top"]), reverse=True)
    assert a["anomaly"] == (a["anomaly_score"] > a["threshold"])

    r = c.post("/ui/try/classify", files={"file": ("b.jpg", data, "image/jpeg")}, data={"target": "shop/clothes"})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["model"] == {**b["model"], "classifier": "clothes", "default": False}
    assert {t["label"] for t in b["top"]} == GROUPS and abs(sum(t["probability"] for t in b["top"]) - 1) < 1e-4
    # The same image over REST analyse gives the same probabilities (same model, same decode).
    analysed = c.post(f"{CLF}/analyse", files={"file": ("q.jpg", data, "image/jpeg")}).json()
    assert [(p["group"], round(p["probability"], 6)) for p in analysed["probabilities"]] == [
        (t["label"], round(t["probability"], 6)) for t in b["top"]
    ]
    with sqlite_api.services.sessions() as s:
        logged = s.scalars(select(PredictionLog).where(PredictionLog.route == "try")).all()
        assert [(x.image_name, x.label, set(x.probabilities)) for x in logged] == [
            ("b.jpg", b["top"][0]["label"], GROUPS)
        ]

    bad = c.post("/ui/try/classify", files={"file": ("x.jpg", b"not an image", "image/jpeg")}, data={"target": ""})
    assert bad.status_code == 422 and "x.jpg" in bad.json()["detail"]
    none = c.post("/ui/try/classify", data={"target": "shop/clothes"})
    assert none.status_code == 422 and "file" in none.json()["detail"]
    wrong = c.post("/ui/try/classify", files={"file": ("a.jpg", data, "image/jpeg")}, data={"target": "shop"})
    assert wrong.status_code == 422 and "target='shop'" in wrong.json()["detail"]
    missing = c.post("/ui/try/classify", files={"file": ("a.jpg", data, "image/jpeg")}, data={"target": "shop/none"})
    assert missing.status_code == 404


def test_analysis_page(sqlite_api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c = sqlite_api.client
    images = _dataset(c, clothing_subset, tmp_path, trainer_key)
    first = images[0]
    page = c.get(f"{UI}/analyse?image_id={first['id']}&k=3")
    assert page.status_code == 200, page.text
    html = page.text
    chart = re.search(r'<svg[^>]*id="prob-chart".*?</svg>', html, re.S)
    assert chart is not None and chart.group(0).count('class="bar"') == 3
    for g in GROUPS:
        assert f">{g}</text>" in chart.group(0)
    assert re.search(r'id="analysis-anomaly" class="(anomalous|normal)">(Anomalous|Not anomalous): the score', html)
    shown = re.findall(r'<figure class="frame neighbour" data-image-id="(\d+)">', html)
    api = c.post(f"{CLF}/analyse?k=3", json={"image_id": first["id"]}).json()
    assert [int(i) for i in shown] == [n["image_id"] for n in api["neighbours"]] and len(shown) == 3
    for i in shown:  # each neighbour one click from its page, and from its own analysis
        assert f'href="/ui/images/{i}"' in html and f"analyse?image_id={i}&amp;k=3" in html
    assert f'href="{UI}/analyse?image_id={first["id"]}"' in c.get(f"/ui/images/{first['id']}").text

    up = c.post(f"{UI}/analyse", files={"file": ("q.jpg", _jpeg(c, first["id"]), "image/jpeg")}, data={"k": "2"})
    assert up.status_code == 200 and 'src="data:image/jpeg;base64,' in up.text
    assert re.findall(r'data-image-id="(\d+)"', up.text)[0] == str(first["id"])  # its own stored copy is nearest
    assert len(re.findall(r'class="frame neighbour"', up.text)) == 2

    bad_k = c.post(f"{UI}/analyse", files={"file": ("q.jpg", b"x", "image/jpeg")}, data={"k": "0"})
    assert bad_k.status_code == 422 and "k=&#39;0&#39;" in bad_k.text
    nothing = c.post(f"{UI}/analyse", data={"k": "3"})
    assert nothing.status_code == 422 and "choose an image" in nothing.text
    other = c.get(f"{UI}/analyse?image_id=999999")
    assert other.status_code == 404 and "image_id=999999" in other.text
    assert c.get(f"{UI}/analyse?frame_id=nope").status_code == 404
    assert c.get(f"{UI}/analyse").status_code == 200  # the form alone


def test_outliers_match_brute_force(sqlite_api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c, services = sqlite_api.client, sqlite_api.services
    images = _dataset(c, clothing_subset, tmp_path, trainer_key, train=False)
    # Put a hat among the dresses: it must be ranked from the same numbers as a plain computation gives.
    hat = next(i for i in images if i["group"] == "hat")
    assert (
        c.post(f"{CLF}/images/bulk", json={"ids": [hat["id"]], "action": "move", "group": "dress"}).status_code == 200
    )
    with services.sessions() as s:
        model = services.embedder.current_model(s)
        rows = s.execute(
            select(Image.id, Image.sha256, Group.name)
            .join(Group, Group.id == Image.group_id)
            .where(Image.status == ImageStatus.GROUP.value)
        ).all()
        vectors = load_vectors(s, [sha for _, sha, _ in rows], model)
        expected = {}
        for image_id, sha, group in rows:
            mine = vectors[sha] / np.linalg.norm(vectors[sha])
            rest = [vectors[x] / np.linalg.norm(vectors[x]) for i, x, g in rows if g == group and i != image_id]
            centroid = np.sum(rest, axis=0)
            expected[image_id] = 1 - float(mine @ centroid / np.linalg.norm(centroid))
        from camfleet_hub.datasets.models import Classifier

        clf = s.scalar(select(Classifier).where(Classifier.name == "clothes"))
        found = outliers.find(services, s, clf)
    assert found.note is None and len(found.rows) == len(rows) == 9
    assert [r.image_id for r in found.rows] == sorted(expected, key=lambda i: (-expected[i], i))
    for r in found.rows:
        assert abs(r.distance - expected[r.image_id]) < 1e-4 and r.nearest_group in GROUPS - {r.group}

    page = c.get(f"{UI}/outliers")
    assert page.status_code == 200
    assert re.findall(r'<tr class="outlier" data-image-id="(\d+)"', page.text) == [str(r.image_id) for r in found.rows]
    assert 'data-can-label="1"' in page.text and 'id="link-outliers"' in page.text


def test_errors_view_bulk_move_and_delete(sqlite_api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c = sqlite_api.client
    images = _dataset(c, clothing_subset, tmp_path, trainer_key, train=False)
    ids = [images[0]["id"], images[4]["id"]]
    act = f"{UI}/errors/action"
    r = c.post(act, data={"action": "move", "group": "misc", "image_id": [str(i) for i in ids]}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"{UI}/errors"
    after = {i["id"]: i for i in c.get(f"{CLF}/images?limit=100").json()}
    assert [after[i]["group"] for i in ids] == ["misc", "misc"]  # a new group, chosen freely
    history = c.get(f"{CLF}/history").json()["entries"]
    assert history[0]["image_count"] == 2  # one entry: one undo puts both back

    r = c.post(act, data={"action": "delete", "image_id": [str(ids[0])]}, follow_redirects=False)
    assert r.status_code == 303
    assert c.get(f"{API}/images/{ids[0]}").json()["status"] == "DELETED"

    none = c.post(act, data={"action": "delete"})
    assert none.status_code == 422 and "tick at least one image" in none.text
    bogus = c.post(act, data={"action": "explode", "image_id": [str(ids[1])]})
    assert bogus.status_code == 422 and "action=&#39;explode&#39;" in bogus.text
    bad_name = c.post(act, data={"action": "move", "group": "", "image_id": [str(ids[1])]})
    assert bad_name.status_code == 422 and "group" in bad_name.text
    page = c.get(f"{UI}/errors")
    assert page.status_code == 200


def test_logs_page_filters_csv_retention(api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c, services = api.client, api.services
    images = _dataset(c, clothing_subset, tmp_path, trainer_key)
    files = [("files", (f"img-{i}.jpg", _jpeg(c, images[i]["id"]), "image/jpeg")) for i in range(3)]
    r = c.post(f"{API}/classify", files=files, data={"site": "shop", "classifier": "clothes"})
    assert r.status_code == 200, r.text
    labels = [x["label"] for x in r.json()["results"]]
    with services.sessions() as s:  # one row from another caller, and one past the site's retention (30 days)
        site_id = s.scalar(select(PredictionLog.site_id))
        base = {"site_id": site_id, "classifier": "clothes", "model_version": 1, "route": "predict"}
        packed = np.asarray([0.9, 0.05, 0.05], SCORE_DTYPE).tobytes()
        groups = class_list_id(s, ["hat", "dress", "shoes"])
        top = {"label": "hat", "probability": 0.9, "class_list_id": groups, "scores": packed}
        s.add(PredictionLog(**base, **top, caller="temple-app", image_name="p.jpg"))
        s.add(
            PredictionLog(**base, **top, caller="old", image_name="old.jpg", created_at=utcnow() - timedelta(days=31))
        )
        s.commit()

    assert services.fleet is not None
    services.fleet.sweep_now()  # the hourly retention sweep; reading the page deletes nothing
    page = c.get("/ui/sites/shop/logs")
    assert page.status_code == 200
    assert page.text.count('class="log-row"') == 4
    assert "old.jpg" not in page.text and "Kept 30 days" in page.text
    mine = c.get("/ui/sites/shop/logs", params={"caller": "temple-app"}).text
    odd = c.get("/ui/sites/shop/logs", params={"caller": "a&label=hat"}).text  # the links keep it one filter
    assert "logs.csv?caller=a%26label%3Dhat" in odd
    assert mine.count('class="log-row"') == 1 and "p.jpg" in mine
    by_label = c.get("/ui/sites/shop/logs", params={"label": labels[0]}).text
    assert by_label.count('class="log-row"') == labels.count(labels[0]) + (labels[0] == "hat")
    future = c.get("/ui/sites/shop/logs", params={"since": (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")})
    assert 'class="log-row"' not in future.text and "match these filters" in future.text
    bad = c.get("/ui/sites/shop/logs", params={"since": "yesterday"})
    assert bad.status_code == 422 and "since=&#39;yesterday&#39;" in bad.text

    out = c.get("/ui/sites/shop/logs.csv", params={"classifier": "clothes"})
    assert out.status_code == 200 and out.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(out.text)))
    assert len(rows) == 4 and {r["image_name"] for r in rows} == {"img-0.jpg", "img-1.jpg", "img-2.jpg", "p.jpg"}
    for row in rows:
        p = json.loads(row["probabilities"])
        assert set(p) == GROUPS and abs(sum(p.values()) - 1) < 1e-4 and row["label"] == max(p, key=p.get)
    assert c.get("/ui/sites/nowhere/logs").status_code == 404
