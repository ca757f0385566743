"""`camfleet-trainer compare`: FP32 and INT8 rows per backbone, measured with ONNX Runtime on held-out images."""

from __future__ import annotations

from pathlib import Path

import pytest

from camfleet_trainer.__main__ import main
from camfleet_trainer.backbone import Backbone
from camfleet_trainer.compare import compare_backbones, holdout_split, render_table
from camfleet_trainer.data import load_folder


def test_compare_measures_fp32_and_int8_and_skips_a_missing_backbone(
    clothing_subset: Path, backbone: Backbone, trainer_cache: Path
) -> None:
    data = load_folder(clothing_subset / "train")
    cmp = compare_backbones(
        data,
        ["tf_efficientnet_lite0", "no_such_model_xyz"],
        trainer_cache,
        evaluation=load_folder(clothing_subset / "validation"),
        speed_runs=3,
        source="subset",
    )
    assert [(r.backbone, r.precision) for r in cmp.rows] == [
        ("tf_efficientnet_lite0", "fp32"),
        ("tf_efficientnet_lite0", "int8"),
    ]
    fp32, int8 = cmp.rows
    # dress / hat / shoes are far apart in these features: a chance-level head (0.33) would mean a broken export.
    assert fp32.accuracy >= 0.8 and int8.accuracy >= 0.6
    assert fp32.images_per_s > 0 and int8.images_per_s > 0
    assert int8.size_mb < fp32.size_mb / 2  # int8 weights: about a quarter of the FP32 file
    assert cmp.eval_images == 15 and cmp.train_images == 60
    assert [s.backbone for s in cmp.skipped] == ["no_such_model_xyz"]
    table = render_table(cmp)
    assert "tf_efficientnet_lite0" in table and "int8" in table and "skipped" in table


def test_holdout_split_is_stratified() -> None:
    import numpy as np

    labels = np.repeat([0, 1, 2], 10)
    held = holdout_split(labels)
    assert [int(held[labels == c].sum()) for c in range(3)] == [2, 2, 2]


@pytest.mark.parametrize("flag", ["--eval-images", "--threads"])
def test_compare_refuses_bad_counts(flag: str, clothing_subset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--data", str(clothing_subset / "train"), flag, "0"]) == 2
    assert flag in capsys.readouterr().err


def test_a_stack_is_compared_as_quick_mode_ships_it(clothing_subset: Path, trainer_cache: Path) -> None:
    from camfleet_trainer.compare import build_candidate
    from camfleet_trainer.config import DEFAULT_COMPARE, DEFAULT_QUICK_BACKBONES

    # the shipped quick model sits beside the singles
    assert build_candidate(DEFAULT_COMPARE[-1]).name == "+".join(DEFAULT_QUICK_BACKBONES)
    stack = build_candidate("lite0+lite1")
    assert stack.name == "tf_efficientnet_lite0+tf_efficientnet_lite1"
    assert stack.embedding_dim == 2 * (3 * 1280 + 320) and stack.preprocessing.size == 240  # band pooling
    assert stack.preprocessing.resize == 240  # the quick view: the whole shorter side
    cmp = compare_backbones(
        load_folder(clothing_subset / "train"),
        ["lite0+lite1"],
        trainer_cache,
        evaluation=load_folder(clothing_subset / "validation"),
        int8=False,
        speed_runs=3,
    )
    (row,) = cmp.rows
    assert (row.backbone, row.precision, row.input_size, row.embedding_dim) == ("lite0+lite1", "fp32", 240, 8320)
    assert row.accuracy >= 0.8 and row.images_per_s > 0
