"""Job modes and params (validated), GPU-only claims, and the heartbeat history served at /jobs/{id}/progress."""

from __future__ import annotations

from pathlib import Path

from apihelpers import import_dataset

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"


def _dataset(client, root: Path, classifier: str = "clothes") -> str:  # type: ignore[no-untyped-def]
    return import_dataset(client, root, per_class=2, classifier=classifier)


def test_job_params_are_validated_and_kept(api, clothing_subset: Path) -> None:
    c = api.client
    _dataset(c, clothing_subset)
    bad = [
        ({"mode": "deep"}, "mode"),
        ({"params": {"epochs": 0}}, "params.epochs"),
        ({"params": {"test_size": 1.5}}, "params.test_size"),
        ({"params": {"batch_size": "big"}}, "params.batch_size"),
        ({"params": {"backbone": "../etc/passwd"}}, "params.backbone"),
        ({"params": {"gpu": "maybe"}}, "params.gpu"),
        ({"params": {"lr": 0.1}}, "params.lr"),
    ]
    for body, field in bad:
        r = c.post(f"{CLF}/jobs", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"].startswith(field), (body, r.json())
    params = {"epochs": 12, "test_size": 0.25, "batch_size": 64, "backbone": "tf_efficientnet_lite1", "gpu": True}
    r = c.post(f"{CLF}/jobs", json={"mode": "full", "auto_promote": True, "params": params})
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["mode"], job["auto_promote"], job["gpu"], job["params"]) == ("full", True, True, params)
    assert c.get(f"{API}/jobs/{job['id']}").json()["params"] == params


def test_gpu_jobs_go_only_to_gpu_workers(api, clothing_subset: Path) -> None:
    c = api.client
    _dataset(c, clothing_subset, "clothes")
    other = _dataset(c, clothing_subset, "other")
    gpu_job = c.post(f"{CLF}/jobs", json={"mode": "full", "params": {"gpu": True}}).json()["id"]
    assert c.post(f"{API}/jobs/claim", json={"worker": "cpu-1", "gpu": False}).status_code == 204
    assert c.post(f"{API}/jobs/claim", json={"worker": "cpu-1"}).status_code == 204  # gpu defaults to false
    cpu_job = c.post(f"{other}/jobs", json={"mode": "quick"}).json()["id"]
    # the GPU worker gets the GPU job, the CPU worker the CPU one
    got = c.post(f"{API}/jobs/claim", json={"worker": "gpu-1", "gpu": True}).json()["job"]
    assert (got["id"], got["worker"], got["gpu"]) == (gpu_job, "gpu-1", True)
    got = c.post(f"{API}/jobs/claim", json={"worker": "cpu-1", "gpu": False}).json()["job"]
    assert got["id"] == cpu_job


def test_gpu_worker_prefers_gpu_jobs(sqlite_api, clothing_subset: Path) -> None:
    c = sqlite_api.client
    _dataset(c, clothing_subset, "clothes")
    other = _dataset(c, clothing_subset, "other")
    cpu_job = c.post(f"{other}/jobs", json={}).json()["id"]
    gpu_job = c.post(f"{CLF}/jobs", json={"params": {"gpu": True}}).json()["id"]
    assert c.post(f"{API}/jobs/claim", json={"worker": "g", "gpu": True}).json()["job"]["id"] == gpu_job
    assert c.post(f"{API}/jobs/claim", json={"worker": "g", "gpu": True}).json()["job"]["id"] == cpu_job


def test_progress_history_and_epoch_curve(api, clothing_subset: Path) -> None:
    c = api.client
    _dataset(c, clothing_subset)
    job_id = c.post(f"{CLF}/jobs", json={"mode": "full", "params": {"epochs": 3}}).json()["id"]
    c.post(f"{API}/jobs/claim", json={"worker": "w"})
    beat = f"{API}/jobs/{job_id}/heartbeat"

    def hb(**body):  # type: ignore[no-untyped-def]
        r = c.post(beat, json={"worker": "w", **body})
        assert r.status_code == 200, r.text
        return r.json()

    hb(progress=0.05, stage="download", message="fetching")
    hb(progress=0.05, stage="download", message="fetching")  # an exact repeat adds nothing
    hb(progress=0.1, stage="train", message="epoch 1/3")
    epoch1 = {"epoch": 1, "loss": 1.2, "train_acc": 0.5, "val_acc": 0.6, "epoch_s": 4.0, "eta_s": 8.0}
    hb(progress=0.4, stage="train", message="epoch 1/3", metrics=epoch1)
    hb(progress=0.4, stage="train", message="epoch 1/3", metrics=epoch1)  # repeated epoch: one point
    two_three = [
        {"epoch": 2, "loss": 0.8, "train_acc": 0.7, "val_acc": 0.75, "epoch_s": 4.0, "eta_s": 4.0},
        {"epoch": 3, "loss": 0.5, "train_acc": 0.9, "val_acc": 0.8, "epoch_s": 4.0, "eta_s": 0.0},
    ]
    hb(progress=0.9, stage="train", message="epoch 3/3", metrics=two_three)
    bad = c.post(beat, json={"worker": "w", "metrics": {"epoch": 4, "train_acc": 1.5}})
    assert bad.status_code == 422 and "metrics" in bad.json()["detail"] and "train_acc" in bad.json()["detail"]
    assert c.post(beat, json={"worker": "w", "metrics": {"loss": 1}}).status_code == 422  # epoch is required

    p = c.get(f"{API}/jobs/{job_id}/progress").json()
    assert p["job"]["id"] == job_id and p["job"]["stage"] == "train"
    stages = [(e["stage"], e["progress"]) for e in p["events"]]
    assert stages == [("download", 0.05), ("train", 0.1), ("train", 0.4), ("train", 0.4), ("train", 0.9)]
    assert [e["epoch"] for e in p["epochs"]] == [1, 2, 3]
    assert p["epochs"][0] == epoch1 and p["epochs"][2]["val_acc"] == 0.8
    assert p["eta_s"] == 0.0
    # polling: only what came after the last event seen
    last = p["last_event_id"]
    hb(progress=0.95, stage="export", message="exporting")
    newer = c.get(f"{API}/jobs/{job_id}/progress", params={"after": last}).json()
    assert [e["stage"] for e in newer["events"]] == ["export"] and len(newer["epochs"]) == 3
    assert c.get(f"{API}/jobs/999/progress").status_code == 404
    # a job that ended has no ETA
    c.post(f"{API}/jobs/{job_id}/cancel")
    assert c.get(f"{API}/jobs/{job_id}/progress").json()["eta_s"] is None
