"""Fixtures for the fault tests (helpers live in ``faultkit``: a module named conftest is ambiguous on sys.path)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def jpegs(test_data: Path) -> list[bytes]:
    """Every carried clothing JPEG (distinct bytes, so every frame is its own object)."""
    files = sorted((test_data / "clothing").rglob("*.jpg"))
    assert len(files) >= 60, files
    return [f.read_bytes() for f in files]
