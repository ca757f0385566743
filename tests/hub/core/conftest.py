"""Fixtures for the hub core tests: database URLs for both engines, a migrated engine, real JPEGs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from camfleet_hub.core.db.session import make_engine, migrate

sys.path.insert(0, str(Path(__file__).parent))  # `import hubcore_helpers` under --import-mode=importlib


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated database."""
    eng = make_engine(db_url)
    migrate(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture(scope="session")
def jpegs(test_data: Path) -> list[bytes]:
    """Twelve distinct real JPEGs from the shared clothing data."""
    files = sorted((test_data / "clothing" / "train" / "dress").glob("*.jpg"))[:6]
    files += sorted((test_data / "clothing" / "train" / "hat").glob("*.jpg"))[:6]
    assert len(files) == 12
    return [f.read_bytes() for f in files]
