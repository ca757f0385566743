"""Bounded polling and unique names, shared by tests that talk to real services."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

WAIT_S = 60.0  # an upper bound: polling returns as soon as the predicate holds


def wait_for(predicate: Callable[[], Any], what: str = "the condition", timeout_s: float = WAIT_S) -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded); fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what} (last value: {value!r})")
        time.sleep(0.05)


def unique(prefix: str) -> str:
    """A name that no other test (or earlier run on the shared broker) uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"
