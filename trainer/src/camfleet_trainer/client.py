"""The hub's REST API as the trainer uses it: the contract's typed client, with the trainer's name and token hint."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from camfleet_contract.client import HubClient as _ContractClient
from camfleet_contract.client import HubError, LeaseLost

__all__ = ["HubClient", "HubError", "LeaseLost"]

AUTH_HINT = (
    "the trainer needs api_token = an every-site admin token "
    "(python -m camfleet_hub token create --role admin --name trainer)"
)


class HubClient(_ContractClient):
    """camfleet_contract.client.HubClient as the trainer: its User-Agent, and a 401/403 that says which token."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 30.0,
        retries: int = 6,
        token: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url, timeout_s, retries, token, sleep, transport, user_agent="camfleet-trainer", auth_hint=AUTH_HINT
        )
