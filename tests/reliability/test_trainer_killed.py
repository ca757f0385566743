"""A trainer SIGKILLed mid-job: its lease (``jobs.lease_s``, 5 s here) runs out without heartbeats and another
trainer claims the job and finishes it. The hub serves HTTP on loopback; trainer A is a real
``python -m camfleet_trainer worker`` process, trainer B the same worker loop in this process. Outcome in
docs/RELIABILITY.md ('Fault tests')."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from camfleet_hub.app import Hub
from camfleet_hub.core.config import HubSettings
from camfleet_trainer.config import TrainerSettings
from camfleet_trainer.worker import Worker
from tests.hub.api.apihelpers import import_dataset
from tests.support.polling import wait_for

API = "/api/v1"
CLF = f"{API}/sites/shop/classifiers/clothes"
LEASE_S = 5.0


def _admin_token(services) -> str:  # type: ignore[no-untyped-def]
    from camfleet_hub.auth import callers, tokens, users
    from camfleet_hub.auth.models import Role

    with services.sessions() as session:
        admin = users.get_user_by_name(session, "admin")
        _row, secret = tokens.create_token(session, callers.caller_of_user(session, admin), "t", None, Role.ADMIN)
    return secret


def test_trainer_killed_mid_job_another_finishes_it(
    tmp_path: Path,
    mosquitto,
    free_port,
    clothing_subset: Path,
    lite0_default_bundle: bytes,  # type: ignore[no-untyped-def]
) -> None:
    port = free_port()
    settings = HubSettings.model_validate(
        {
            "data_dir": str(tmp_path / "hub"),
            "http": {"port": port},
            "mqtt": {"embedded": False, "host": mosquitto.host, "port": mosquitto.port,
                     "root": f"cf{uuid.uuid4().hex[:8]}", "client_id": f"tk-{uuid.uuid4().hex[:8]}"},
            "ingest": {"enabled": False},
            "auth": {"admin_username": "admin", "admin_password": "admin-password-1"},
            "jobs": {"lease_s": LEASE_S},
        }
    )  # fmt: skip
    hub = Hub(settings, http=True, ingest=False, broker=False)
    services = hub.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        token = _admin_token(services)
        c = httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
        r = c.put(f"{API}/models/default", files={"file": ("default.zip", lite0_default_bundle, "application/zip")})
        assert r.status_code in (200, 201), r.text
        import_dataset(c, clothing_subset, per_class=10)  # embedded at import: a quick job reuses the vectors
        job_id = c.post(f"{CLF}/jobs", json={"mode": "quick"}).json()["id"]

        cfg = tmp_path / "trainer-a.toml"
        cfg.write_text(
            f'hub_url = "{hub.url}"\napi_token = "{token}"\nworker = "trainer-a"\n'
            f'cache_dir = "{tmp_path / "cache-a"}"\ndevice = "cpu"\npoll_interval_s = 0.2\n'
        )
        log = tmp_path / "trainer-a.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "camfleet_trainer", "worker", "--config", str(cfg), "--max-jobs", "1"],
                stdout=out,
                stderr=out,
            )

        def claimed_by_a() -> bool:
            job = c.get(f"{API}/jobs/{job_id}").json()
            assert job["status"] != "succeeded", "trainer A finished before it could be killed"
            return bool(job["status"] == "running" and job["worker"] == "trainer-a")

        wait_for(claimed_by_a, "trainer A to claim the job", 120)
        os.kill(proc.pid, signal.SIGKILL)  # mid-job: claimed, not delivered
        proc.wait(timeout=30)
        killed_at = time.monotonic()

        b = Worker(
            TrainerSettings(
                hub_url=hub.url,
                api_token=token,
                worker="trainer-b",
                cache_dir=tmp_path / "cache-b",
                device="cpu",
                poll_interval_s=0.5,
            )  # fmt: skip
        )
        assert b.run(max_jobs=1) == 1  # polls until the lease has run out, then claims and trains
        assert time.monotonic() - killed_at >= LEASE_S - 1.0  # not before A's lease expired
        job = c.get(f"{API}/jobs/{job_id}").json()
        assert (job["status"], job["worker"], job["attempts"]) == ("succeeded", "trainer-b", 2), job
        models = c.get(f"{CLF}/models").json()
        assert len(models) == 1 and models[0]["status"] == "candidate"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        hub.stop()
