"""The Training page (start, live job, chart, cancel, history), the model page and the Errors view."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree

from apihelpers import bundle_zip, import_dataset, sample_report

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"
PAGE = "/ui/sites/shop/classifiers/clothes"


def _dataset(client, root: Path) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    import_dataset(client, root)
    return list(client.get(f"{CLF}/images", params={"limit": 100}).json())


def test_training_page_start_watch_cancel(sqlite_api, clothing_subset: Path) -> None:
    c = sqlite_api.client
    _dataset(c, clothing_subset)
    index = c.get("/").text
    assert f'href="{PAGE}/training"' in index and f'href="{PAGE}/errors"' in index

    page = c.get(f"{PAGE}/training")
    assert page.status_code == 200 and "Start training" in page.text and "No training jobs yet" in page.text
    bad = c.post(f"{PAGE}/jobs", data={"mode": "full", "epochs": "0"})
    assert bad.status_code == 422 and "params.epochs" in bad.text and "Start training" in bad.text
    r = c.post(f"{PAGE}/jobs", data={"mode": "full", "epochs": "5", "gpu": "1"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"{PAGE}/training"
    job = c.get(f"{CLF}/jobs").json()[0]
    assert (job["mode"], job["params"], job["gpu"]) == ("full", {"epochs": 5, "gpu": True}, True)
    again = c.post(f"{PAGE}/jobs", data={"mode": "quick"})
    assert again.status_code == 409 and "already has job" in again.text

    c.post(f"{API}/jobs/claim", json={"worker": "gpu-box", "gpu": True})
    for epoch, (loss, acc) in enumerate([(1.0, 0.5), (0.6, 0.7), (0.4, 0.8)], 1):
        metrics = {"epoch": epoch, "loss": loss, "train_acc": acc, "val_acc": acc - 0.05, "eta_s": 90.0 * (4 - epoch)}
        body = {"worker": "gpu-box", "progress": epoch / 4, "stage": "train", "message": f"epoch {epoch}/5"}
        assert c.post(f"{API}/jobs/{job['id']}/heartbeat", json={**body, "metrics": metrics}).status_code == 200

    page = c.get(f"{PAGE}/training").text
    assert f'data-job="{job["id"]}"' in page and 'data-epochs="3"' in page and "training.js" in page
    assert "epoch 3/5" in page and "gpu-box" in page and "Cancel job" in page and "Start training" not in page
    assert re.search(r"ETA <span id=\"job-eta\">1 min 30 s</span>", page)
    assert page.count("<polyline") == 3  # train loss, train and val accuracy (no val loss given)

    chart = c.get(f"/ui/jobs/{job['id']}/chart.svg")
    assert chart.status_code == 200
    root = ElementTree.fromstring(chart.text)  # well-formed markup: two SVG charts
    svgs = root.findall("{http://www.w3.org/2000/svg}svg")
    assert len(svgs) == 2 and len(svgs[1].findall("{http://www.w3.org/2000/svg}polyline")) == 2
    assert c.get("/ui/jobs/999/chart.svg").status_code == 404
    script = c.get("/static/training.js")
    assert script.status_code == 200 and "/progress?after=" in script.text
    assert "://" not in script.text  # nothing fetched from elsewhere

    r = c.post(f"/ui/jobs/{job['id']}/cancel", follow_redirects=False)
    assert r.status_code == 303 and c.get(f"{API}/jobs/{job['id']}").json()["status"] == "cancelled"
    page = c.get(f"{PAGE}/training").text
    assert "Start training" in page and f"#{job['id']} full" in page and "cancelled" in page
    assert re.search(r"<td>\d+ s</td>", page)  # how long the job ran
    assert c.get("/ui/sites/shop/classifiers/nope/training").status_code == 404


def test_model_page_and_errors_view(sqlite_api, clothing_subset: Path, tmp_path: Path, trainer_key: str) -> None:
    c = sqlite_api.client
    images = _dataset(c, clothing_subset)
    models = []
    for seed in (1, 2):
        job_id = c.post(f"{CLF}/jobs", json={}).json()["id"]
        c.post(f"{API}/jobs/claim", json={"worker": "t"})
        metrics = {"mode": "quick", "oof_accuracy": 0.9, "likely_mislabelled": 3 * (seed - 1)}
        bundle = bundle_zip(tmp_path, trainer_key, report=sample_report(images), model_seed=seed, metrics=metrics)
        models.append(c.post(f"{API}/jobs/{job_id}/result", files={"file": ("b.zip", bundle)}).json())
    v1, v2 = models

    page = c.get(f"/ui/models/{v1['id']}").text
    assert "Promote to production" in page and "Roll back" not in page
    assert f'src="{API}/models/{v1["id"]}/confusion.png"' in page
    assert page.count(f'src="{API}/images/') == 3  # the misclassified thumbnails
    assert "anomaly_threshold" in page and "speedup" in page and "<td>hat</td>" in page
    # figures in plain words, the trainer's key in the tooltip
    assert '<th title="oof_accuracy">accuracy on images held out of each fold</th><td>0.9</td>' in page
    assert '<th title="speedup">speed-up</th><td>2.1</td>' in page
    r = c.post(f"/ui/models/{v1['id']}/promote", data={"next": f"/ui/models/{v1['id']}"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/ui/models/{v1['id']}"
    r = c.post(f"/ui/models/{v2['id']}/promote", data={"next": "//evil.example"}, follow_redirects=False)
    assert r.headers["location"] == "/"
    page = c.get(f"/ui/models/{v2['id']}").text
    assert "Roll back to v1" in page and "Promote to production" not in page
    r = c.post(f"/ui/models/{v2['id']}/rollback", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/ui/models/{v1['id']}"
    assert "no earlier production version" in c.get(f"/ui/models/{v1['id']}").text

    overview = c.get("/").text  # each version's accuracy, in plain words, rather than every metric's key
    assert overview.count("<td>90.0 %</td>") == 2 and "oof_accuracy" not in overview
    errors = c.get(f"{PAGE}/errors").text
    assert f"model v{v2['version']}" in errors and errors.count("Move to ") == 3
    assert "about <strong>3</strong> labels are wrong: most of them are among the first 3 rows" in errors
    doubtful = c.get(f"{CLF}/label-errors", params={"limit": 1}).json()[0]
    r = c.post(
        f"/ui/images/{doubtful['image_id']}/group",
        data={"group": doubtful["predicted_label"], "next": f"{PAGE}/errors"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == f"{PAGE}/errors"
    moved = [i for i in c.get(f"{CLF}/images", params={"limit": 100}).json() if i["id"] == doubtful["image_id"]]
    assert moved[0]["group"] == doubtful["predicted_label"]
    assert c.get(f"{PAGE}/errors").text.count("Move to ") == 2
    assert c.post(f"/ui/images/{doubtful['image_id']}/group", data={"group": "no/slash"}).status_code == 422
    assert c.get("/ui/models/999").status_code == 404
    default = c.put(f"{API}/models/default", files={"file": ("d.zip", bundle_zip(tmp_path, trainer_key))}).json()
    page = c.get(f"/ui/models/{default['id']}")
    assert page.status_code == 200 and "ImageNet default" in page.text and "Roll back" not in page.text
