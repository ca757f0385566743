"""The hub's REST API as the trainer uses it: retries with backoff on connection errors and 5xx answers."""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from camfleet_contract.vectors import VectorsError, unpack_vectors

log = logging.getLogger(__name__)

API = "/api/v1"
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
DATASET_TIMEOUT_S = 900.0


class HubError(RuntimeError):
    """The hub answered with an error the trainer cannot retry (4xx), or stayed unreachable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LeaseLost(HubError):
    """The hub gave the job to someone else, or it ended (409): stop working on it."""


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:500]


class HubClient:
    """Typed calls to the hub; every call retries transport errors and 5xx with exponential backoff."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 30.0,
        retries: int = 6,
        token: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "camfleet-trainer"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.retries = retries
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + API,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            headers=headers,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, ok: tuple[int, ...] = (200, 201), **kwargs: Any) -> httpx.Response:
        """Send with retries; answers in `ok` (or 204/404 when listed) come back, other 4xx raise HubError."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in ok:
                    return response
                if response.status_code == 409:
                    raise LeaseLost(f"{method} {path}: 409 {_detail(response)}", 409)
                if response.status_code in (401, 403):
                    raise HubError(
                        f"{method} {path}: {response.status_code} {_detail(response)} - the trainer needs api_token = "
                        "an every-site admin token (python -m camfleet_hub token create --role admin --name trainer)",
                        response.status_code,
                    )
                if response.status_code < 500:
                    raise HubError(f"{method} {path}: {response.status_code} {_detail(response)}", response.status_code)
                problem = f"{response.status_code} {_detail(response)}"
            if attempt >= self.retries:
                raise HubError(f"{method} {path} failed after {attempt + 1} tries: {problem}")
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * (0.5 + random.random() / 2)
            log.warning("%s %s: %s; retrying in %.1fs", method, path, problem, delay)
            self._sleep(delay)
            attempt += 1

    # ------------------------------------------------------------------ default model

    def get_default_model(self) -> dict[str, Any] | None:
        """The registered ImageNet default, or None when the hub has none yet (404)."""
        response = self._request("GET", "/models/default", ok=(200, 404))
        return None if response.status_code == 404 else response.json()

    def put_default_model(self, bundle_zip: bytes) -> dict[str, Any]:
        files = {"file": ("bundle.zip", bundle_zip, "application/zip")}
        return self._request("PUT", "/models/default", files=files).json()

    # ------------------------------------------------------------------ jobs

    def claim(self, worker: str, gpu: bool) -> dict[str, Any] | None:
        """`{job, lease_seconds}` of a claimed job, or None when nothing is waiting (204)."""
        response = self._request("POST", "/jobs/claim", ok=(200, 204), json={"worker": worker, "gpu": gpu})
        return None if response.status_code == 204 else response.json()

    def dataset(self, job_id: int) -> dict[str, Any]:
        """`{classes, images: [{id, sha256, group, cluster}]}` of the job.

        Waits up to DATASET_TIMEOUT_S: the hub links near-duplicates across the whole dataset for this answer,
        1.4 s per 1,000 images at 20k and 1.9 s at 50k on 2 cores (minutes at 100k), while heartbeats keep the lease.
        """
        timeout = httpx.Timeout(DATASET_TIMEOUT_S, connect=10.0)
        return self._request("GET", f"/jobs/{job_id}/dataset", timeout=timeout).json()

    def embeddings(self, job_id: int) -> dict[str, np.ndarray]:
        """The hub's stored embeddings of the job's images (sha256 → unit vector); {} from a hub without them."""
        response = self._request("GET", f"/jobs/{job_id}/embeddings", ok=(200, 404))
        if response.status_code == 404:
            return {}
        try:
            return unpack_vectors(response.content)
        except VectorsError as exc:
            raise HubError(f"GET /jobs/{job_id}/embeddings: {exc}") from None

    def blob(self, sha256: str) -> bytes | None:
        """Image bytes by content hash, checked against the hash; None when the hub no longer has them."""
        response = self._request("GET", f"/blobs/{sha256}", ok=(200, 404))
        if response.status_code == 404:
            return None
        data = response.content
        if hashlib.sha256(data).hexdigest() != sha256:
            raise HubError(f"GET /blobs/{sha256}: the bytes received do not match that sha256")
        return data

    def heartbeat(
        self,
        job_id: int,
        worker: str,
        progress: float,
        stage: str,
        message: str = "",
        metrics: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Renew the lease; the answer's `cancel` says to stop. Raises LeaseLost (409) when the job is gone.

        `metrics` are the epochs finished since the last heartbeat (full mode), for the hub's live chart.
        """
        body: dict[str, Any] = {
            "worker": worker,
            "progress": max(0.0, min(1.0, progress)),
            "stage": stage[:64],
            "message": message[:2000],
        }
        if metrics:
            body["metrics"] = metrics
        return self._request("POST", f"/jobs/{job_id}/heartbeat", json=body).json()

    def fail(self, job_id: int, worker: str, reason: str) -> None:
        self._request("POST", f"/jobs/{job_id}/fail", json={"worker": worker, "reason": reason[:2000] or "failed"})

    def upload_result(self, job_id: int, bundle_zip: bytes) -> dict[str, Any]:
        """Upload the bundle; safe to repeat (the hub keeps the first result of a job)."""
        files = {"file": ("bundle.zip", bundle_zip, "application/zip")}
        return self._request("POST", f"/jobs/{job_id}/result", files=files).json()
