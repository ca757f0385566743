"""scripts/setup.sh's torch choice (scripts/torch_choice.py): never the multi-GB CUDA build by accident, never a
stop because a CUDA build is what is installed. The decision is tested as a unit on pip report shapes, and once
against the real plain index with every local wheel folder and pip config ignored (metadata only, no download)."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("torch_choice", ROOT / "scripts" / "torch_choice.py")
assert SPEC and SPEC.loader
torch_choice = importlib.util.module_from_spec(SPEC)
sys.modules["torch_choice"] = torch_choice
SPEC.loader.exec_module(torch_choice)

LINUX_X86 = {
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "sys_platform": "linux",
    "python_version": "3.11",
    "python_full_version": "3.11.9",
    "os_name": "posix",
    "platform_release": "",
    "platform_version": "",
    "platform_python_implementation": "CPython",
    "implementation_name": "cpython",
    "implementation_version": "3.11.9",
    "extra": "",
}
MAC_ARM = dict(LINUX_X86, platform_system="Darwin", platform_machine="arm64", sys_platform="darwin")
CUDA_REQUIRES = [
    "filelock",
    'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"',
    'nvidia-nccl-cu13==2.29.7; platform_system == "Linux"',
    "sympy>=1.13.3",
]


def _report(version: str, url: str, requires: list[str]) -> dict[str, Any]:
    return {
        "install": [
            {
                "metadata": {"name": "torch", "version": version, "requires_dist": requires},
                "download_info": {"url": url},
            }
        ]
    }


PYPI_URL = "https://files.pythonhosted.org/packages/xx/torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl"


@pytest.mark.parametrize(
    ("installed", "report", "env", "source"),
    [
        # already there, CPU or CUDA build: kept (a CUDA build never stops the setup)
        ("2.13.0+cpu", None, LINUX_X86, "installed"),
        ("2.13.0", None, LINUX_X86, "installed"),
        ("2.13.0+cu130", None, LINUX_X86, "installed"),
        # a local wheel folder or a configured mirror with a CPU build: taken as configured
        (None, _report("2.13.0+cpu", "file:///opt/wheels/torch-2.13.0%2Bcpu-cp311.whl", []), LINUX_X86, "configured"),
        (None, _report("2.13.0", "file:///srv/wheels/torch-2.13.0-cp311.whl", CUDA_REQUIRES), LINUX_X86, "configured"),
        (None, _report("2.13.0+cpu", "https://mirror.example/torch-2.13.0+cpu.whl", []), LINUX_X86, "configured"),
        # the plain index on x86-64 Linux: the CUDA build -> PyTorch's CPU index
        (None, _report("2.13.0", PYPI_URL, CUDA_REQUIRES), LINUX_X86, "cpu-index"),
        ("2.12.0", _report("2.13.0", PYPI_URL, CUDA_REQUIRES), LINUX_X86, "cpu-index"),
        # the same wheel metadata on a Mac: the CUDA requirements do not apply -> plain index
        (None, _report("2.13.0", PYPI_URL, CUDA_REQUIRES), MAC_ARM, "plain"),
        (None, _report("2.13.0", PYPI_URL, ["filelock", "sympy"]), LINUX_X86, "plain"),
        # pip cannot resolve it as configured: the CPU index is the remaining source
        (None, None, LINUX_X86, "cpu-index"),
    ],
)
def test_decide(installed: str | None, report: dict[str, Any] | None, env: dict[str, str], source: str) -> None:
    choice = torch_choice.decide("2.13.0", installed, report, env)
    assert choice.source == source, choice.reason
    if source == "cpu-index":
        assert choice.pip_args == ("--index-url", "https://download.pytorch.org/whl/cpu")
    else:
        assert choice.pip_args == ()


def test_setup_sh_uses_the_choice_and_never_stops_on_a_cuda_build() -> None:
    text = (ROOT / "scripts" / "setup.sh").read_text()
    assert "scripts/torch_choice.py" in text
    assert "torch.version.cuda is None" not in text  # the old "must be the CPU build" check


@pytest.mark.skipif(
    (platform.system(), platform.machine()) != ("Linux", "x86_64"), reason="the CUDA build is the x86-64 Linux default"
)
def test_plain_index_dry_run_picks_the_cpu_index() -> None:
    """pip with no config and no local wheel folders (as on a user's PC) resolves torch to the CUDA build from the
    plain index; the choice is then PyTorch's CPU index. Only index pages and wheel metadata are fetched."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    report = torch_choice.dry_run_report(sys.executable, "torch==2.13.0", env)
    if report is None:
        pytest.skip("the plain index is not reachable here")
    (entry,) = report["install"]
    assert not entry["download_info"]["url"].startswith("file:"), "a local wheel folder was not ignored"
    choice = torch_choice.decide("2.13.0", None, report)
    assert choice.source == "cpu-index", choice.reason
