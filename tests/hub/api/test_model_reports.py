"""Model reports from the bundle's report.json: storage, GET /models/{id}/report, the confusion PNG, label errors,
older bundles without a report, and rollback reaching the retained announcement."""

from __future__ import annotations

import io
from pathlib import Path

from apihelpers import bundle_zip, import_dataset, sample_report
from PIL import Image

from camfleet_contract.messages import ModelAnnouncement, from_json
from camfleet_hub.training.figure_names import named

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"


def _dataset(client, root: Path) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    import_dataset(client, root)
    return list(client.get(f"{CLF}/images", params={"limit": 100}).json())


def _result(client, bundle: bytes) -> dict:  # type: ignore[no-untyped-def,type-arg]
    job_id = client.post(f"{CLF}/jobs", json={}).json()["id"]
    assert client.post(f"{API}/jobs/claim", json={"worker": "t"}).json()["job"]["id"] == job_id
    r = client.post(f"{API}/jobs/{job_id}/result", files={"file": ("b.zip", bundle, "application/zip")})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_report_is_stored_and_served(api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c = api.client
    images = _dataset(c, clothing_subset)
    model = _result(c, bundle_zip(tmp_path, trainer_key, report=sample_report(images)))

    rep = c.get(f"{API}/models/{model['id']}/report").json()
    assert rep["classes"] == ["dress", "hat", "shoes"] and rep["version"] == 1
    assert rep["per_class"]["hat"] == {"precision": 0.9, "recall": 0.8, "support": 3}
    assert rep["confusion"] == [[3, 1, 1], [1, 3, 1], [1, 1, 3]]
    assert rep["confusion_url"] == f"{API}/models/{model['id']}/confusion.png"
    assert rep["thresholds"]["anomaly_threshold"] == 0.93 and rep["thresholds"]["method"] == "percentile"
    assert "conf_ref" not in rep["thresholds"]
    assert rep["int8"]["speedup"] == 2.1
    assert rep["label_errors"] == len(images) + 1 and "label_errors" not in rep["report"]
    # no "misclassified" list in the report: the out-of-fold mistakes stand in, most doubtful first
    doubted = [i for i in images if i["id"] in {m["image_id"] for m in rep["misclassified"]}]
    assert len(rep["misclassified"]) == 3 and {i["group"] for i in doubted} == {"dress", "hat", "shoes"}
    first = rep["misclassified"][0]
    assert first["thumbnail_url"] == f"{API}/images/{first['image_id']}/thumbnail"
    assert c.get(first["thumbnail_url"]).headers["content-type"] == "image/jpeg"

    png = c.get(rep["confusion_url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(png.content))
    picture.load()
    assert picture.format == "PNG" and picture.width > 3 * 40 and picture.height > 3 * 40
    assert c.get(f"{API}/models/999/report").status_code == 404


def test_label_errors_ranked_and_fixed(api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c = api.client
    images = _dataset(c, clothing_subset)
    assert c.get(f"{CLF}/label-errors").json() == []  # no model yet
    _result(c, bundle_zip(tmp_path, trainer_key, report=sample_report(images)))
    ranked = c.get(f"{CLF}/label-errors", params={"limit": 100}).json()
    assert len(ranked) == len(images)  # the row naming an image the hub does not have is dropped
    confidences = [r["self_confidence"] for r in ranked]
    assert confidences == sorted(confidences)
    top = ranked[:3]
    assert all(r["given_label"] != r["predicted_label"] and r["group"] == r["given_label"] for r in top)
    assert all(r["given_label"] == r["predicted_label"] for r in ranked[3:])
    assert [r["image_id"] for r in c.get(f"{CLF}/label-errors", params={"limit": 2}).json()] == [
        r["image_id"] for r in top[:2]
    ]
    # one click: move the most doubtful image to its predicted group; it leaves the list
    r = c.patch(f"{API}/images/{top[0]['image_id']}", json={"group": top[0]["predicted_label"]})
    assert r.status_code == 200 and r.json()["group"] == top[0]["predicted_label"]
    after = c.get(f"{CLF}/label-errors", params={"limit": 100}).json()
    assert top[0]["image_id"] not in {x["image_id"] for x in after} and len(after) == len(images) - 1
    assert c.get(f"{CLF}/label-errors", params={"limit": 0}).status_code == 422
    # a newer model's ranking replaces the older one
    newer = sample_report(list(reversed(c.get(f"{CLF}/images", params={"limit": 100}).json())))
    model2 = _result(c, bundle_zip(tmp_path, trainer_key, report=newer, model_seed=3))
    assert {r["model_version_id"] for r in c.get(f"{CLF}/label-errors").json()} == {model2["id"]}


def test_older_bundles_without_report(sqlite_api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c = sqlite_api.client
    images = _dataset(c, clothing_subset)
    plain = _result(c, bundle_zip(tmp_path, trainer_key))
    rep = c.get(f"{API}/models/{plain['id']}/report").json()
    assert (rep["per_class"], rep["confusion"], rep["confusion_url"], rep["misclassified"]) == ({}, None, None, [])
    assert rep["int8"] is None and rep["label_errors"] == 0 and rep["thresholds"]["target_flag_rate"] == 0.05
    r = c.get(f"{API}/models/{plain['id']}/confusion.png")
    assert r.status_code == 404 and "no confusion matrix" in r.json()["detail"]
    assert c.get(f"{CLF}/label-errors").json() == []
    # odd shapes: a confusion matrix of the wrong size, per_class not a dict, ranking rows missing fields
    odd = {
        "metrics": {"confusion": [[1, 2], [3, 4]], "per_class": ["x"]},
        "label_errors": [{"sha256": images[0]["sha256"]}, "junk"],
        "misclassified": [{"sha256": images[1]["sha256"], "label": "hat", "predicted": "dress"}, {"label": 1}],
    }
    model = _result(c, bundle_zip(tmp_path, trainer_key, report=odd, model_seed=4))
    rep = c.get(f"{API}/models/{model['id']}/report").json()
    assert (rep["per_class"], rep["confusion"]) == ({}, None)
    assert rep["misclassified"] == [
        {
            "image_id": images[1]["id"],
            "sha256": images[1]["sha256"],
            "label": "hat",
            "predicted": "dress",
            "probability": None,
            "thumbnail_url": f"{API}/images/{images[1]['id']}/thumbnail",
        }
    ]
    assert c.get(f"{CLF}/label-errors").json() == []


def test_rollback(api, clothing_subset: Path, tmp_path: Path, trainer_key: str, retained) -> None:
    c = api.client
    _dataset(c, clothing_subset)
    v1, v2, v3 = (_result(c, bundle_zip(tmp_path, trainer_key, model_seed=s)) for s in (1, 2, 3))

    def version() -> str:
        seen = retained.snapshot(api.prefix, "shop")
        return from_json(ModelAnnouncement, seen["clothes"]).version if "clothes" in seen else ""

    r = c.post(f"{API}/models/{v1['id']}/rollback")
    assert r.status_code == 409 and "only the production version" in r.json()["detail"]
    c.post(f"{API}/models/{v1['id']}/promote")
    r = c.post(f"{API}/models/{v1['id']}/rollback")
    assert r.status_code == 409 and "no earlier production version" in r.json()["detail"]
    c.post(f"{API}/models/{v2['id']}/promote")
    c.post(f"{API}/models/{v3['id']}/promote")

    r = c.post(f"{API}/models/{v3['id']}/rollback")
    assert r.status_code == 200 and (r.json()["id"], r.json()["status"]) == (v2["id"], "production")
    retained.wait_for(api.prefix, "shop", lambda _m: version() == "2", "the rollback to v2 announced")
    r = c.post(f"{API}/models/{v2['id']}/rollback")  # v3 was rolled back: skipped
    assert r.status_code == 200 and r.json()["id"] == v1["id"]
    retained.wait_for(api.prefix, "shop", lambda _m: version() == "1", "the rollback to v1 announced")
    statuses = {m["version"]: m["status"] for m in c.get(f"{CLF}/models").json()}
    assert statuses == {1: "production", 2: "retired", 3: "retired"}
    assert c.post(f"{API}/models/{v1['id']}/rollback").status_code == 409
    # promoting a rolled-back version again makes it a rollback target again later
    c.post(f"{API}/models/{v3['id']}/promote")
    assert c.post(f"{API}/models/{v3['id']}/rollback").json()["id"] == v1["id"]
    assert c.post(f"{API}/models/999/rollback").status_code == 404


def test_figures_are_named_in_plain_words_in_a_fixed_order() -> None:
    figures = {"zeta_count": 3, "oof_accuracy": 0.91, "mode": "quick", "per_class": {"a": {}}, "flips": True}
    rows = named({**figures, "statistics": ["energy", "distance"], "refs": [0.1, 0.2]})
    assert [(r.key, r.name, r.value) for r in rows] == [
        ("mode", "training mode", "quick"),
        ("oof_accuracy", "accuracy on images held out of each fold", 0.91),
        ("flips", "mirror images trained on", True),
        ("statistics", "anomaly statistics", "energy, distance"),
        ("zeta_count", "zeta count", 3),  # not named: its key, spaced, after the named ones
    ]  # nested figures (per_class) have their own table, reference curves none
