"""Where scripts/setup.sh takes PyTorch from: what is installed, what pip is configured to give, or PyTorch's CPU index.

    python scripts/torch_choice.py torch==2.13.0     prints one line: "<source> <pip arguments…>" (reason on stderr)

Sources, in order:
  installed    the virtualenv already has that torch version (a CPU or a CUDA build: both run camfleet)
  configured   pip as configured here (a local wheel folder, a mirror) gives a local file or a CPU build
  plain        the plain index gives a build without CUDA packages (macOS, Windows, some arm64 Linux wheels)
  cpu-index    the plain index would give the multi-GB CUDA build: take the CPU build from PyTorch's CPU index
The decision reads pip's own `install --dry-run --report` (nothing is downloaded but the index pages and the
wheel's metadata); `decide()` is the pure part, unit-tested in tests/deploy/test_setup_torch.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

CPU_INDEX = os.environ.get("CAMFLEET_TORCH_CPU_INDEX", "https://download.pytorch.org/whl/cpu")


@dataclass(frozen=True)
class Choice:
    source: str  # installed | configured | plain | cpu-index
    pip_args: tuple[str, ...]
    reason: str


def _public(version: str) -> str:
    """2.13.0+cpu -> 2.13.0"""
    return version.split("+", 1)[0]


def _applies(requirement: str, environment: Mapping[str, str] | None) -> bool:
    """Whether a Requires-Dist line applies here (its marker, if any, evaluates true)."""
    if ";" not in requirement:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # pip's vendored copy
        from pip._vendor.packaging.markers import Marker  # type: ignore[no-redef]
    marker = Marker(requirement.split(";", 1)[1].strip())
    return bool(marker.evaluate(dict(environment) if environment is not None else None))  # type: ignore[arg-type]


def decide(
    wanted: str,
    installed: str | None,
    report: Mapping[str, Any] | None,
    environment: Mapping[str, str] | None = None,
) -> Choice:
    """The torch source for `wanted` (a version) given the installed version and pip's dry-run report."""
    if installed is not None and _public(installed) == wanted:
        return Choice("installed", (), f"torch {installed} is installed (a CUDA build is fine too)")
    entries = [e for e in (report or {}).get("install", []) if e["metadata"]["name"].lower() == "torch"]
    if not entries:
        return Choice("cpu-index", ("--index-url", CPU_INDEX), "pip as configured offers no torch: CPU index")
    entry = entries[0]
    version = entry["metadata"]["version"]
    url = entry.get("download_info", {}).get("url", "")
    if url.startswith("file:"):
        return Choice("configured", (), f"torch {version} from a local file ({url})")
    if version.endswith("+cpu"):
        return Choice("configured", (), f"torch {version} (a CPU build) from the configured index")
    cuda = [
        r for r in entry["metadata"].get("requires_dist", []) if r.startswith("nvidia-") and _applies(r, environment)
    ]
    if cuda:
        return Choice(
            "cpu-index",
            ("--index-url", CPU_INDEX),
            f"the configured index gives torch {version} with {len(cuda)} CUDA packages: PyTorch's CPU index",
        )
    return Choice("plain", (), f"torch {version} from the configured index has no CUDA packages")


def dry_run_report(python: str, spec: str, env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """pip's report of what `pip install spec` would install (metadata only); None when pip cannot resolve it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [python, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps", "--ignore-installed"]
        done = subprocess.run([*cmd, "--report", str(out), spec], capture_output=True, text=True, timeout=600, env=env)
        if done.returncode != 0 or not out.exists():
            print(f"[setup] pip cannot resolve {spec} as configured: {done.stderr.strip()[-300:]}", file=sys.stderr)
            return None
        return json.loads(out.read_text())  # type: ignore[no-any-return]


def installed_torch() -> str | None:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str]) -> int:
    spec = argv[1] if len(argv) > 1 else "torch==2.13.0"
    wanted = spec.split("==", 1)[1]
    installed = installed_torch()
    report = None if installed and _public(installed) == wanted else dry_run_report(sys.executable, spec)
    choice = decide(wanted, installed, report)
    print(f"[setup] torch: {choice.reason}", file=sys.stderr)
    print(" ".join([choice.source, *choice.pip_args]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
