"""Fixtures of the security suite (the hub and its callers are built in ``world.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.world import World, running_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mosquitto: Any, clothing_subset: Path) -> Iterator[World]:
    """One hub per test module (the role matrix changes its resources; the hostile suite must not)."""
    with running_world(tmp_path_factory.mktemp("security"), mosquitto, clothing_subset) as w:
        yield w
