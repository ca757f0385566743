"""The trainer's worker loop against a real hub API: a full-mode job (tiny: one epoch at 64 px) is claimed, its
dataset downloaded, the model fine-tuned with per-epoch heartbeats, exported, and registered as a candidate.

The worker's HTTP client hands every request to the TestClient, so hub and trainer share one process but every call
goes through the real routes, auth and validation.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from apihelpers import import_dataset

from camfleet_contract.vectors import MODEL_HEADER, unpack_vectors
from camfleet_hub.training.models import ModelVersion, TrainingJob
from camfleet_trainer.client import HubClient
from camfleet_trainer.config import TrainerSettings
from camfleet_trainer.worker import Worker

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"


def _worker(api, tmp_path: Path, **settings: object) -> Worker:  # type: ignore[no-untyped-def]
    base = str(api.client.base_url)

    def through_the_app(request: httpx.Request) -> httpx.Response:
        r = api.client.request(request.method, str(request.url), headers=request.headers, content=request.read())
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)

    client = HubClient(base, token=api.admin_token, retries=0, transport=httpx.MockTransport(through_the_app))
    config = TrainerSettings(
        hub_url=base, worker="test-worker", cache_dir=tmp_path / "cache", device="cpu", **settings
    )  # fmt: skip
    return Worker(config, client=client)


def _upload_default(c, bundle: bytes) -> httpx.Response:  # type: ignore[no-untyped-def]
    """The hub's default model, so the worker does not export one (and imports are embedded under it)."""
    return c.put(f"{API}/models/default", files={"file": ("default.zip", bundle, "application/zip")})


def test_worker_runs_a_full_mode_job_to_a_candidate(
    sqlite_api, clothing_subset: Path, lite0_default_bundle: bytes, tmp_path: Path
) -> None:
    c = sqlite_api.client
    import_dataset(c, clothing_subset, per_class=10)
    r = _upload_default(c, lite0_default_bundle)
    assert r.status_code in (200, 201), r.text
    params = {"epochs": 1, "image_size": 64, "batch_size": 8, "int8": False}
    job = c.post(f"{CLF}/jobs", json={"mode": "full", "params": params})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]

    assert _worker(sqlite_api, tmp_path).run(max_jobs=1) == 1

    done = c.get(f"{API}/jobs/{job_id}").json()
    assert done["status"] == "succeeded", done
    progress = c.get(f"{API}/jobs/{job_id}/progress").json()
    # Epoch 0 is the estimate (model before fine-tuning), epoch 1 the one trained; both streamed as heartbeats.
    epochs = [e["epoch"] for e in progress["epochs"]]
    assert epochs == [0, 1], progress["epochs"]
    assert progress["epochs"][0]["eta_s"] > 0
    assert {"loss", "train_acc", "val_acc"} <= set(progress["epochs"][1])
    assert {e["stage"] for e in progress["events"]} >= {"download", "train"}

    models = c.get(f"{CLF}/models").json()
    assert len(models) == 1 and models[0]["status"] == "candidate"
    with sqlite_api.services.sessions() as session:
        row = session.get(ModelVersion, models[0]["id"])
        assert row is not None
        manifest = row.manifest
    assert manifest["classes"] == ["dress", "hat", "shoes"]
    assert manifest["preprocessing"]["size"] == 64
    assert "model.int8.onnx" not in manifest["files"]  # int8: false reached the trainer
    # Full runs rank label errors too (out-of-fold heads on the fine-tuned embeddings): one row per image.
    errors = c.get(f"{CLF}/label-errors", params={"limit": 100}).json()
    assert len(errors) == 30 and {e["given_label"] for e in errors} == {"dress", "hat", "shoes"}


def test_worker_trains_a_quick_job_on_the_embeddings_the_hub_made_at_import(
    sqlite_api, clothing_subset: Path, lite0_default_bundle: bytes, tmp_path: Path
) -> None:
    c = sqlite_api.client
    r = _upload_default(c, lite0_default_bundle)
    assert r.status_code in (200, 201), r.text
    import_dataset(c, clothing_subset, per_class=10)  # embedded at import, under the default just uploaded
    job = c.post(f"{CLF}/jobs", json={"mode": "quick"})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    served = c.get(f"{API}/jobs/{job_id}/embeddings")
    assert served.status_code == 200 and served.headers[MODEL_HEADER] == r.json()["sha256"]
    assert len(unpack_vectors(served.content)) == 30

    # The hub's vectors stand only for the default bundle's recipe (one lite0 on its own preprocessing), not for
    # quick mode's default stack: pin that recipe here.
    default_recipe = {"quick_backbones": ["tf_efficientnet_lite0"], "quick_view": "std", "quick_pooling": "mean"}
    assert _worker(sqlite_api, tmp_path, **default_recipe).run(max_jobs=1) == 1

    assert c.get(f"{API}/jobs/{job_id}").json()["status"] == "succeeded"
    models = c.get(f"{CLF}/models").json()
    assert len(models) == 1 and models[0]["status"] == "candidate"
    metrics = models[0]["metrics"]
    # 4 images go through the trainer's backbone to check that the hub's vectors match it; the rest are reused.
    assert metrics["embeddings_reused"] == 26, metrics
    assert metrics["flips"] is False and metrics["oof_accuracy"] > 0.8
    # Only the images it read were downloaded: the 4 checked ones and the 8 of the export's parity check at most.
    downloaded = list((tmp_path / "cache" / "blobs").rglob("*"))
    assert 4 <= len([p for p in downloaded if p.is_file()]) <= 12

    # A trainer told not to use them embeds image + mirror itself (the 4 checked images are in its cache).
    again = c.post(f"{CLF}/jobs", json={"mode": "quick"}).json()["id"]
    assert _worker(sqlite_api, tmp_path, hub_embeddings=False, **default_recipe).run(max_jobs=1) == 1
    assert c.get(f"{API}/jobs/{again}").json()["status"] == "succeeded"
    newest = max(c.get(f"{CLF}/models").json(), key=lambda m: m["id"])["metrics"]
    assert newest["embeddings_reused"] == 0 and newest["flips"] is True

    # Quick mode's default recipe (several backbones) is not what the hub embedded with: it embeds every image itself.
    third = c.post(f"{CLF}/jobs", json={"mode": "quick"}).json()["id"]
    assert _worker(sqlite_api, tmp_path).run(max_jobs=1) == 1
    assert c.get(f"{API}/jobs/{third}").json()["status"] == "succeeded"
    newest = max(c.get(f"{CLF}/models").json(), key=lambda m: m["id"])["metrics"]
    assert newest["embeddings_reused"] == 0 and newest["flips"] is True


def test_worker_fails_a_job_whose_params_it_cannot_use(
    sqlite_api, clothing_subset: Path, lite0_default_bundle: bytes, tmp_path: Path
) -> None:
    """A job stored with a value the trainer refuses ends failed, naming the parameter; the worker goes on."""
    c = sqlite_api.client
    import_dataset(c, clothing_subset, per_class=3)
    _upload_default(c, lite0_default_bundle)
    job_id = c.post(f"{CLF}/jobs", json={"mode": "full"}).json()["id"]
    with sqlite_api.services.sessions() as session:  # as if written by an older hub or by hand
        row = session.get(TrainingJob, job_id)
        assert row is not None
        row.params = {"int8": "sometimes"}
        session.commit()

    assert _worker(sqlite_api, tmp_path).run(max_jobs=1) == 1

    done = c.get(f"{API}/jobs/{job_id}").json()
    assert done["status"] == "failed" and "params.int8" in done["message"], done
    assert c.get(f"{CLF}/models").json() == []


def test_a_compare_job_measures_backbones_and_the_training_page_shows_the_table(
    sqlite_api, clothing_subset: Path, lite0_default_bundle: bytes, tmp_path: Path
) -> None:
    c = sqlite_api.client
    import_dataset(c, clothing_subset, per_class=10)
    _upload_default(c, lite0_default_bundle)
    page = "/ui/sites/shop/classifiers/clothes"
    assert c.get(f"{CLF}/comparison").status_code == 404  # none yet
    r = c.post(f"{page}/jobs", data={"mode": "compare"}, follow_redirects=False)  # started from the page
    assert r.status_code == 303, r.text
    job_id = c.get(f"{CLF}/jobs").json()[0]["id"]

    # lite0 and a backbone whose weights no package ships: measured and skipped, as the CLI does
    assert _worker(sqlite_api, tmp_path, compare_backbones=["lite0", "no_such_model_xyz"]).run(max_jobs=1) == 1

    job = c.get(f"{API}/jobs/{job_id}").json()
    assert (job["status"], job["mode"], job["model_version_id"]) == ("succeeded", "compare", None), job
    assert {e["stage"] for e in c.get(f"{API}/jobs/{job_id}/progress").json()["events"]} >= {"download", "compare"}
    table = c.get(f"{CLF}/comparison").json()
    assert [(r["backbone"], r["precision"]) for r in table["rows"]] == [("lite0", "fp32"), ("lite0", "int8")]
    assert table["classes"] == ["dress", "hat", "shoes"] and table["train_images"] + table["eval_images"] == 30
    assert all(r["accuracy"] >= 0.6 and r["images_per_s"] > 0 and r["size_mb"] > 0 for r in table["rows"])
    assert [s["backbone"] for s in table["skipped"]] == ["no_such_model_xyz"]
    assert not c.get(f"{CLF}/models").json()  # a comparison registers no model

    html = c.get(f"{page}/training").text
    assert "Which backbone?" in html and html.count("<meter") == 4 and "no_such_model_xyz" in html
    assert 'value="compare"' in html  # the page can start another one

    # Only the worker that held the job may deliver; a training job delivers a bundle, not a table.
    body = {"worker": "someone-else", "comparison": table}
    assert c.post(f"{API}/jobs/{job_id}/comparison", json=body).status_code == 409
    c.post(f"{CLF}/jobs", json={"mode": "quick"})
    quick = c.post(f"{API}/jobs/claim", json={"worker": "test-worker"}).json()["job"]["id"]
    answer = c.post(f"{API}/jobs/{quick}/comparison", json={**body, "worker": "test-worker"})
    assert answer.status_code == 409 and "only a compare job" in answer.text
