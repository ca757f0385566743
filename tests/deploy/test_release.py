"""Release basics: one licence everywhere (the one pyproject declares), a changelog, --version on every CLI."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"contract": None, "hub": "camfleet_hub", "edge-agent": "camfleet_agent", "trainer": "camfleet_trainer"}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_package_declares_apache_and_carries_the_licence(package: str) -> None:
    project = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (ROOT / package / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0" in text
    assert text == (ROOT / "LICENSE").read_text()


def test_changelog_names_the_current_version() -> None:
    version = tomllib.loads((ROOT / "hub" / "pyproject.toml").read_text())["project"]["version"]
    assert f"## [{version}]" in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.parametrize("package", [p for p in sorted(PACKAGES) if PACKAGES[p]])
def test_cli_version(package: str) -> None:
    module = PACKAGES[package]
    version = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]["version"]
    done = subprocess.run([sys.executable, "-m", str(module), "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(version), done.stdout


def test_service_lock_files_pin_every_package() -> None:
    locks = sorted((ROOT / "requirements").glob("*.lock"))
    assert {p.stem for p in locks} >= {"hub", "agent", "trainer"}
    for lock in locks:
        lines = [line for line in lock.read_text().splitlines() if line and not line.startswith((" ", "#", "-"))]
        assert lines, lock.name
        for line in lines:
            assert "==" in line or " @ " in line, f"{lock.name}: {line} is not pinned"
