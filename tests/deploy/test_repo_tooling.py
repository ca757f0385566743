"""The repository's own tooling: the test command CI runs, the Makefile targets and the shipped demo sample."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DEMO_CLASSES = ["dress", "hat", "pants", "shoes"]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    assert [line for line in lines if line and not line.startswith(("#", "set ", "cd "))] == ["make test"]


def test_makefile_has_the_documented_targets() -> None:
    targets = set(re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    assert {"demo", "test", "bench", "setup", "lint"} <= targets


@pytest.mark.parametrize("script", sorted((ROOT / "scripts").glob("*.sh")), ids=lambda p: p.name)
def test_shell_scripts_parse(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_demo_sample_is_small_complete_and_decodes() -> None:
    demo = ROOT / "demo"
    sample = demo / "sample"
    assert sorted(p.name for p in sample.iterdir() if p.is_dir()) == DEMO_CLASSES
    assert "CC0" in (sample.parent / "LICENSE").read_text()
    images = []
    for cls in DEMO_CLASSES:
        files = sorted((sample / cls).glob("*.jpg"))
        assert len(files) == 15, cls
        images += files
    camera = sorted((demo / "camera").glob("*.jpg"))
    assert [p.name for p in camera] == [f"{cls}_{n}.jpg" for cls in DEMO_CLASSES for n in (1, 2)]
    images += camera
    for path in images:
        with Image.open(path) as image:
            assert image.format == "JPEG", path
            image.load()
    total = sum(p.stat().st_size for p in demo.rglob("*") if p.is_file())
    assert total < 3 * 1024 * 1024, f"demo/ holds {total} bytes; keep the shipped sample under 3 MB"
