"""A small typed client of the hub's REST API (camfleet_contract.rest), shared by the trainer and the agent.

Every call retries transport errors and 5xx answers with exponential backoff and returns the contract's models;
4xx answers raise HubError naming the call (409: LeaseLost).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel, ValidationError

from camfleet_contract import rest
from camfleet_contract.vectors import VectorsError, unpack_vectors

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
DATASET_TIMEOUT_S = 900.0
BUNDLE_MEDIA = "application/zip"
M = TypeVar("M", bound=BaseModel)


class HubError(RuntimeError):
    """The hub answered with an error the caller cannot retry (4xx, a malformed body), or stayed unreachable."""

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
    """Typed calls to the hub under `base_url` (without /api/v1).

    `auth_hint` is added to 401/403 errors (which token the caller needs); `sleep` waits between retries and
    may raise to stop them (the trainer's stop).
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 30.0,
        retries: int = 6,
        token: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        *,
        user_agent: str = "camfleet",
        auth_hint: str = "",
    ) -> None:
        headers = {"User-Agent": user_agent}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.retries = retries
        self.auth_hint = auth_hint
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + rest.API_PREFIX,
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

    # ------------------------------------------------------------------ plumbing

    def _request(
        self, endpoint: rest.Endpoint, path: str, ok: Sequence[int] = (200, 201), **kwargs: Any
    ) -> httpx.Response:
        """Send with retries; answers in `ok` come back, other 4xx raise HubError (409: LeaseLost)."""
        method = endpoint.method
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status in ok:
                    return response
                if status == 409:
                    raise LeaseLost(f"{method} {path}: 409 {_detail(response)}", 409)
                if status in (401, 403):
                    hint = f" - {self.auth_hint}" if self.auth_hint else ""
                    raise HubError(f"{method} {path}: {status} {_detail(response)}{hint}", status)
                if status < 500:
                    raise HubError(f"{method} {path}: {status} {_detail(response)}", status)
                problem = f"{status} {_detail(response)}"
            if attempt >= self.retries:
                raise HubError(f"{method} {path} failed after {attempt + 1} tries: {problem}")
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt) * (0.5 + random.random() / 2)
            log.warning("%s %s: %s; retrying in %.1fs", method, path, problem, delay)
            self._sleep(delay)
            attempt += 1

    @staticmethod
    def _parse(model: type[M], response: httpx.Response) -> M:
        """The body as the contract's model; a body that is not one is a HubError naming the first problem."""
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            request = response.request
            raise HubError(
                f"{request.method} {request.url.path}: answer is not a {model.__name__}: {where}: {first['msg']}"
            ) from None

    # ------------------------------------------------------------------ models and keys

    def get_default_model(self) -> rest.ModelPublic | None:
        """The registered ImageNet default, or None when the hub has none yet (404)."""
        ep = rest.GET_DEFAULT_MODEL
        response = self._request(ep, ep.path(), ok=(200, 404))
        return None if response.status_code == 404 else self._parse(rest.ModelPublic, response)

    def put_default_model(self, bundle_zip: bytes) -> rest.ModelPublic:
        ep = rest.PUT_DEFAULT_MODEL
        files = {"file": ("bundle.zip", bundle_zip, BUNDLE_MEDIA)}
        return self._parse(rest.ModelPublic, self._request(ep, ep.path(), files=files))

    def fleet_key(self) -> rest.FleetKey:
        """The fleet's public key as the hub states it (the agent decides whether to trust it)."""
        ep = rest.FLEET_KEY
        return self._parse(rest.FleetKey, self._request(ep, ep.path(), ok=(200,)))

    # ------------------------------------------------------------------ jobs (the trainer's side)

    def claim(self, worker: str, gpu: bool) -> rest.JobClaimed | None:
        """A claimed job with its lease, or None when nothing is waiting (204)."""
        ep = rest.CLAIM_JOB
        body = rest.JobClaim(worker=worker, gpu=gpu).model_dump()
        response = self._request(ep, ep.path(), ok=(200, 204), json=body)
        return None if response.status_code == 204 else self._parse(rest.JobClaimed, response)

    def dataset(self, job_id: int) -> rest.Dataset:
        """The job's classes and images.

        Waits up to DATASET_TIMEOUT_S: the hub links near-duplicates across the whole dataset for this answer,
        1.4 s per 1,000 images at 20k and 1.9 s at 50k on 2 cores (minutes at 100k), while heartbeats keep the lease.
        """
        ep = rest.JOB_DATASET
        timeout = httpx.Timeout(DATASET_TIMEOUT_S, connect=10.0)
        return self._parse(rest.Dataset, self._request(ep, ep.path(job_id=job_id), timeout=timeout))

    def embeddings(self, job_id: int) -> dict[str, np.ndarray]:
        """The hub's stored embeddings of the job's images (sha256 → unit vector); {} from a hub without them."""
        ep = rest.JOB_EMBEDDINGS
        path = ep.path(job_id=job_id)
        response = self._request(ep, path, ok=(200, 404))
        if response.status_code == 404:
            return {}
        try:
            return unpack_vectors(response.content)
        except VectorsError as exc:
            raise HubError(f"GET {path}: {exc}") from None

    def blob(self, sha256: str) -> bytes | None:
        """Image bytes by content hash, checked against the hash; None when the hub no longer has them."""
        ep = rest.BLOB
        path = ep.path(sha256=sha256)
        response = self._request(ep, path, ok=(200, 404))
        if response.status_code == 404:
            return None
        data = response.content
        if hashlib.sha256(data).hexdigest() != sha256:
            raise HubError(f"GET {path}: the bytes received do not match that sha256")
        return data

    def heartbeat(
        self,
        job_id: int,
        worker: str,
        progress: float,
        stage: str,
        message: str = "",
        metrics: Sequence[rest.EpochMetrics] | None = None,
    ) -> rest.HeartbeatAnswer:
        """Renew the lease; the answer's `cancel` says to stop. Raises LeaseLost (409) when the job is gone.

        `metrics` are the epochs finished since the last heartbeat (full mode), for the hub's live chart.
        """
        ep = rest.HEARTBEAT_JOB
        beat = rest.JobHeartbeat(
            worker=worker,
            progress=max(0.0, min(1.0, progress)),
            stage=stage[:64],
            message=message[:2000],
            metrics=list(metrics) if metrics else None,
        )
        body = beat.model_dump(mode="json", exclude_none=True)
        return self._parse(rest.HeartbeatAnswer, self._request(ep, ep.path(job_id=job_id), json=body))

    def fail(self, job_id: int, worker: str, reason: str) -> rest.JobPublic:
        ep = rest.FAIL_JOB
        body = rest.JobFail(worker=worker, reason=reason[:2000] or "failed").model_dump()
        return self._parse(rest.JobPublic, self._request(ep, ep.path(job_id=job_id), json=body))

    def upload_comparison(self, job_id: int, worker: str, comparison: rest.ModelComparison) -> rest.JobPublic:
        """A compare job's table; the hub stores it and marks the job done."""
        ep = rest.JOB_COMPARISON
        body = rest.JobComparison(worker=worker, comparison=comparison).model_dump(mode="json")
        return self._parse(rest.JobPublic, self._request(ep, ep.path(job_id=job_id), json=body))

    def upload_result(self, job_id: int, bundle_zip: bytes) -> rest.ModelPublic:
        """Upload the bundle; safe to repeat (the hub keeps the first result of a job)."""
        ep = rest.JOB_RESULT
        files = {"file": ("bundle.zip", bundle_zip, BUNDLE_MEDIA)}
        return self._parse(rest.ModelPublic, self._request(ep, ep.path(job_id=job_id), files=files))
