"""The training-job queue: requirements, claim under a lease, heartbeat, expiry + retry, fail, cancel, races."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

from apihelpers import dataset_zip, import_dataset
from sqlalchemy import update

from camfleet_hub.core.db.types import utcnow
from camfleet_hub.training import jobs as job_service
from camfleet_hub.training.models import TrainingJob

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"


def _dataset(client, root: Path, per_class: int = 3, classes=("dress", "hat", "shoes")) -> None:  # type: ignore[no-untyped-def]
    import_dataset(client, root, per_class, classes)


def _expire_lease(api, job_id: int) -> None:  # type: ignore[no-untyped-def]
    """Make the lease run out now, as if the worker had gone silent for longer than the lease."""
    with api.services.sessions() as session:
        session.execute(
            update(TrainingJob).where(TrainingJob.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()


def test_job_needs_two_groups_with_two_images(api, clothing_subset: Path) -> None:
    c = api.client
    _dataset(c, clothing_subset, per_class=3, classes=("dress",))
    r = c.post(f"{CLF}/jobs", json={"mode": "quick"})
    assert r.status_code == 422
    assert "at least 2 groups" in r.json()["detail"] and "dress (3)" in r.json()["detail"]
    assert c.post(f"{CLF}/jobs", json={"mode": "deep"}).status_code == 422  # only "quick" exists yet
    data = dataset_zip(clothing_subset / "train", per_class=2, classes=("hat",))
    c.post(f"{CLF}/import?wait=true", files={"file": ("d.zip", data, "application/zip")})
    r = c.post(f"{CLF}/jobs", json={"mode": "quick", "auto_promote": False})
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["status"], job["attempts"], job["site"], job["classifier"]) == ("queued", 0, "shop", "clothes")
    again = c.post(f"{CLF}/jobs", json={})
    assert again.status_code == 409 and f"id={job['id']}" in again.json()["detail"]
    assert [j["id"] for j in c.get(f"{CLF}/jobs").json()] == [job["id"]]


def test_claim_heartbeat_dataset_and_fail(api, clothing_subset: Path) -> None:
    c = api.client
    assert c.post(f"{API}/jobs/claim", json={"worker": "w1"}).status_code == 204
    _dataset(c, clothing_subset)
    job_id = c.post(f"{CLF}/jobs", json={}).json()["id"]

    claimed = c.post(f"{API}/jobs/claim", json={"worker": "w1", "gpu": False})
    assert claimed.status_code == 200
    body = claimed.json()
    assert body["lease_seconds"] == 60
    assert (body["job"]["id"], body["job"]["status"], body["job"]["worker"], body["job"]["attempts"]) == (
        job_id,
        "running",
        "w1",
        1,
    )
    assert c.post(f"{API}/jobs/claim", json={"worker": "w2"}).status_code == 204

    dataset = c.get(f"{API}/jobs/{job_id}/dataset").json()
    assert dataset["classes"] == ["dress", "hat", "shoes"]
    assert (dataset["site"], dataset["classifier"]) == ("shop", "clothes")
    assert len(dataset["images"]) == 9
    first = dataset["images"][0]
    blob = c.get(f"{API}/blobs/{first['sha256']}")
    assert blob.status_code == 200
    assert blob.content == c.get(f"{API}/images/{first['id']}/content").content

    hb = c.post(
        f"{API}/jobs/{job_id}/heartbeat", json={"worker": "w1", "progress": 0.5, "stage": "train", "message": "epoch 1"}
    )
    assert hb.status_code == 200 and hb.json() == {"cancel": False, "lease_seconds": 60}
    job = c.get(f"{API}/jobs/{job_id}").json()
    assert (job["progress"], job["stage"], job["message"]) == (0.5, "train", "epoch 1")
    assert c.post(f"{API}/jobs/{job_id}/heartbeat", json={"worker": "w1", "progress": 1.5}).status_code == 422

    stranger = c.post(f"{API}/jobs/{job_id}/heartbeat", json={"worker": "w2", "progress": 0.6})
    assert stranger.status_code == 409 and "w2" in stranger.json()["detail"]
    assert c.post(f"{API}/jobs/{job_id}/fail", json={"worker": "w2", "reason": "x"}).status_code == 409

    failed = c.post(f"{API}/jobs/{job_id}/fail", json={"worker": "w1", "reason": "CUDA out of memory"})
    assert failed.status_code == 200
    assert (failed.json()["status"], failed.json()["message"]) == ("failed", "CUDA out of memory")
    assert c.post(f"{API}/jobs/{job_id}/heartbeat", json={"worker": "w1"}).status_code == 409
    assert c.post(f"{API}/jobs/claim", json={"worker": "w1"}).status_code == 204
    # a failed job no longer blocks a new one
    assert c.post(f"{CLF}/jobs", json={}).status_code == 201


def test_lease_expiry_retry_and_max_attempts(api, clothing_subset: Path) -> None:
    c = api.client
    _dataset(c, clothing_subset)
    job_id = c.post(f"{CLF}/jobs", json={}).json()["id"]
    assert c.post(f"{API}/jobs/claim", json={"worker": "w1"}).json()["job"]["attempts"] == 1

    _expire_lease(api, job_id)
    retry = c.post(f"{API}/jobs/claim", json={"worker": "w2"})
    assert retry.status_code == 200
    assert (retry.json()["job"]["id"], retry.json()["job"]["worker"], retry.json()["job"]["attempts"]) == (
        job_id,
        "w2",
        2,
    )
    lost = c.post(f"{API}/jobs/{job_id}/heartbeat", json={"worker": "w1", "progress": 0.9})
    assert lost.status_code == 409 and "'w2'" in lost.json()["detail"]
    assert c.post(f"{API}/jobs/{job_id}/heartbeat", json={"worker": "w2", "progress": 0.1}).status_code == 200

    _expire_lease(api, job_id)
    assert c.post(f"{API}/jobs/claim", json={"worker": "w3"}).json()["job"]["attempts"] == 3
    _expire_lease(api, job_id)
    assert c.post(f"{API}/jobs/claim", json={"worker": "w4"}).status_code == 204
    job = c.get(f"{API}/jobs/{job_id}").json()
    assert (job["status"], job["message"], job["attempts"]) == ("failed", "lease expired 3 times", 3)


def test_cancel(api, clothing_subset: Path) -> None:
    c = api.client
    _dataset(c, clothing_subset)
    queued = c.post(f"{CLF}/jobs", json={}).json()["id"]
    r = c.post(f"{API}/jobs/{queued}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert c.post(f"{API}/jobs/{queued}/cancel").status_code == 409
    assert c.post(f"{API}/jobs/claim", json={"worker": "w1"}).status_code == 204

    running = c.post(f"{CLF}/jobs", json={}).json()["id"]
    assert c.post(f"{API}/jobs/claim", json={"worker": "w1"}).json()["job"]["id"] == running
    assert c.post(f"{API}/jobs/{running}/cancel").json()["status"] == "cancelled"
    hb = c.post(f"{API}/jobs/{running}/heartbeat", json={"worker": "w1", "progress": 0.3})
    assert hb.status_code == 200 and hb.json()["cancel"] is True
    assert c.post(f"{API}/jobs/{running}/heartbeat", json={"worker": "w9"}).status_code == 409
    assert c.get(f"{API}/jobs/{running}").json()["status"] == "cancelled"


def test_concurrent_claimers_never_share_a_job(api, clothing_subset: Path) -> None:
    """Many workers race for a handful of jobs (one per classifier); every job is claimed exactly once."""
    c = api.client
    c.post(f"{API}/sites", json={"name": "shop"})
    data = dataset_zip(clothing_subset / "train", per_class=2, classes=("dress", "hat"))
    job_ids = []
    for i in range(6):
        c.post(f"{API}/sites/shop/classifiers", json={"name": f"c{i}"})
        c.post(
            f"{API}/sites/shop/classifiers/c{i}/import?wait=true", files={"file": ("d.zip", data, "application/zip")}
        )
        job_ids.append(c.post(f"{API}/sites/shop/classifiers/c{i}/jobs", json={}).json()["id"])

    claims: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(name: str) -> None:
        got: list[int] = []
        try:
            start.wait(timeout=30)
            for _ in range(len(job_ids)):
                with api.services.sessions() as session:
                    job = job_service.claim(session, name)
                if job is not None:
                    got.append(job.id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        claims[name] = got

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    all_claims = [j for got in claims.values() for j in got]
    assert sorted(all_claims) == sorted(job_ids), claims
    for job_id in job_ids:
        job = c.get(f"{API}/jobs/{job_id}").json()
        assert job["attempts"] == 1 and job["status"] == "running"
