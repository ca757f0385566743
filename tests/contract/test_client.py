"""The contract's hub client: answers come back as the contract's models; a body that is not one is a HubError
naming the field, never a KeyError later in the caller."""

from __future__ import annotations

import httpx
import pytest

from camfleet_contract.client import HubClient, HubError, LeaseLost
from camfleet_contract.rest import HeartbeatAnswer


def _client(handler: httpx.MockTransport) -> HubClient:
    return HubClient("http://hub.test", retries=0, transport=handler)


def test_heartbeat_answer_is_typed_and_the_body_is_the_contract_request() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"cancel": True, "lease_seconds": 12})

    with _client(httpx.MockTransport(answer)) as client:
        got = client.heartbeat(3, "w1", 1.7, "train", "x" * 3000)
    assert got == HeartbeatAnswer(cancel=True, lease_seconds=12.0)
    assert seen[0].url.path == "/api/v1/jobs/3/heartbeat"
    body = httpx.Response(200, content=seen[0].content).json()
    assert body["progress"] == 1.0 and len(body["message"]) == 2000 and "metrics" not in body


def test_a_malformed_answer_is_a_hub_error_naming_the_field() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"cancel": "maybe", "lease_seconds": 12})

    with _client(httpx.MockTransport(answer)) as client, pytest.raises(HubError, match="HeartbeatAnswer: cancel"):
        client.heartbeat(3, "w1", 0.5, "train")


def test_409_is_lease_lost_and_401_carries_the_hint() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        code = 409 if request.url.path.endswith("/heartbeat") else 401
        return httpx.Response(code, json={"detail": "no"})

    transport = httpx.MockTransport(answer)
    with HubClient("http://hub.test", retries=0, transport=transport, auth_hint="use an admin token") as client:
        with pytest.raises(LeaseLost):
            client.heartbeat(3, "w1", 0.5, "train")
        with pytest.raises(HubError, match="401 no - use an admin token"):
            client.claim("w1", gpu=False)
