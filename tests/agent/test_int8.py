"""The agent runs a bundle's INT8 model when its trainer vouched for it and `use_int8` is on (the default)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from bundles import build_bundle

from camfleet_agent.config import AgentSettings
from camfleet_agent.models.manager import ModelManager
from camfleet_agent.models.store import ACTIVE_FILE
from camfleet_contract.bundle import MODEL, MODEL_INT8
from camfleet_contract.images import decode_image

CLF = "clothes"


def _loaded(data_dir: Path, public_key: str, **kwargs: object) -> ModelManager:
    mm = ModelManager(data_dir, "http://127.0.0.1:9", lambda: public_key, site="shop", **kwargs)  # type: ignore[arg-type]
    mm.load_from_disk()
    return mm


@pytest.mark.parametrize(
    ("int8", "use_int8", "expected"),
    [(True, True, MODEL_INT8), (True, False, MODEL), (False, True, MODEL), (None, True, MODEL)],
)
def test_model_file_chosen(  # type: ignore[no-untyped-def]
    tmp_path: Path, fleet_seed: str, fleet_public: str, image_folder: Path, int8, use_int8: bool, expected: str
) -> None:
    data_dir = tmp_path / "agent"
    bundle = data_dir / "models" / CLF / "1"
    build_bundle(bundle, fleet_seed, classifier=CLF, version="1", int8=int8)
    (data_dir / "models" / CLF / ACTIVE_FILE).write_text('{"version": "1", "previous": null}')
    if int8 is not None:
        ops = {n.op_type for n in onnx.load(str(bundle / MODEL_INT8)).graph.node}
        assert "MatMulInteger" in ops  # a really quantised graph
    runtime = _loaded(data_dir, fleet_public, use_int8=use_int8).active()[CLF]
    assert runtime.model_file == expected
    rgb = decode_image(next(image_folder.glob("*.jpg")).read_bytes())
    result = runtime.classify([rgb])[0]
    assert result.label in ("dress", "hat", "shoes") and 0.0 <= result.probability <= 1.0


def test_use_int8_setting_defaults_on() -> None:
    assert AgentSettings(agent="a1", site="shop").use_int8 is True
    assert AgentSettings(agent="a1", site="shop", use_int8=False).use_int8 is False
    with pytest.raises(ValueError, match="use_int8"):
        AgentSettings(agent="a1", site="shop", use_int8="sometimes")  # type: ignore[arg-type]


def test_int8_and_fp32_agree_on_real_images(tmp_path: Path, fleet_seed: str, image_folder: Path) -> None:
    """The CLI picks INT8 by default and FP32 with --fp32; the tiny model's top-1 is the same either way."""
    build_bundle(tmp_path / "b", fleet_seed, classifier=CLF, version="1", int8=True)
    images = sorted(image_folder.glob("*.jpg"))[:4]
    labels = {}
    for flag in ([], ["--fp32"]):
        cmd = [sys.executable, "-m", "camfleet_agent", "classify", "--bundle", str(tmp_path / "b"), "--json"]
        out = subprocess.run([*cmd, *flag, *map(str, images)], capture_output=True, text=True, timeout=120, check=True)
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        labels[bool(flag)] = [r["label"] for r in rows]
    assert labels[False] == labels[True] and len(labels[False]) == len(images)
