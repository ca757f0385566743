"""`camfleet-trainer eval`: a trained bundle judged on real validation images, unseen kinds and broken files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camfleet_trainer.errors import DatasetError
from camfleet_trainer.evaluate import (
    CONFUSION_PNG,
    REPORT_JSON,
    Evaluation,
    accuracy_scores,
    confusion_image,
    confusion_matrix,
    evaluate_bundle,
    per_class_metrics,
    render_text,
    shown_classes,
    write_report,
)

from .conftest import Trained
from .test_cli import run_cli

UNSEEN = "skirt"
UNSEEN_IMAGES = 6


@pytest.fixture(scope="module")
def eval_data(clothing_subset: Path, test_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The subset's validation images, a folder of a kind the bundle never saw, and one broken file."""
    root = tmp_path_factory.mktemp("eval") / "data"
    shutil.copytree(clothing_subset / "validation", root)
    (root / UNSEEN).mkdir()
    for path in sorted((test_data / "clothing" / "validation" / UNSEEN).glob("*.jpg"))[:UNSEEN_IMAGES]:
        shutil.copy(path, root / UNSEEN)
    (root / "hat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return root


def test_metrics_from_a_known_confusion() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 0, 1, 1, 0, 1])
    confusion = confusion_matrix(labels, predicted, 3)
    assert confusion.tolist() == [[3, 1, 0], [1, 1, 0], [0, 1, 0]]
    accuracy, balanced = accuracy_scores(confusion)
    assert accuracy == pytest.approx(4 / 7, abs=1e-4)
    assert balanced == pytest.approx((3 / 4 + 1 / 2 + 0) / 3, abs=1e-4)
    m = per_class_metrics(confusion, ["a", "b", "c"])
    assert (m["a"].precision, m["a"].recall, m["a"].support) == (0.75, 0.75, 4)
    assert m["b"].precision == pytest.approx(1 / 3, abs=1e-4) and m["b"].f1 == pytest.approx(0.4, abs=1e-4)
    assert (m["c"].precision, m["c"].recall, m["c"].f1, m["c"].predicted) == (0.0, 0.0, 0.0, 0)


def test_evaluation_of_a_trained_bundle(trained: Trained, eval_data: Path, tmp_path: Path) -> None:
    ev = evaluate_bundle(trained.bundle, eval_data, public_key=trained.outcome.manifest.signer)
    assert ev.classes == ["dress", "hat", "shoes"]
    assert ev.images == 15  # the unseen folder and the broken file are not in the accuracy
    assert {name: m.support for name, m in ev.per_class.items()} == {"dress": 5, "hat": 5, "shoes": 5}
    assert sum(map(sum, ev.confusion)) == 15
    assert ev.accuracy > 0.8, render_text(ev)  # measured 15/15
    assert len(ev.mistakes) == round((1 - ev.accuracy) * 15)
    assert ev.flagged <= 4 and ev.flag_rate == pytest.approx(ev.flagged / 15, abs=1e-4)
    [unseen] = ev.unseen
    assert unseen.name == UNSEEN and unseen.images == UNSEEN_IMAGES
    assert sum(unseen.predicted_as.values()) == UNSEEN_IMAGES
    assert unseen.flag_rate == pytest.approx(unseen.flagged / UNSEEN_IMAGES, abs=1e-4)
    [(path, reason)] = ev.unreadable
    assert path.endswith("broken.jpg") and reason

    text = render_text(ev)
    for expected in ("accuracy", "balanced", "precision", "recall", "f1", "confusion", UNSEEN, "broken.jpg", "flagged"):
        assert expected in text, text
    json_path, png_path = write_report(ev, tmp_path / "report")
    assert json.loads(json_path.read_text())["per_class"]["hat"]["support"] == 5
    with Image.open(png_path) as img:
        assert img.format == "PNG" and img.width > 150 and img.height > 150


def test_eval_command_prints_json_and_writes_the_picture_without_torch(
    trained: Trained, eval_data: Path, tmp_path: Path
) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from camfleet_trainer.__main__ import main
        code = main(["eval", "--bundle", {str(trained.bundle)!r}, "--data", {str(eval_data)!r}, "--json",
                     "--report-dir", {str(tmp_path / "r")!r}])
        assert "torch" not in sys.modules, "eval imported torch"
        sys.exit(code)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["images"] == 15 and result["unseen"][0]["name"] == UNSEEN
    assert result["unreadable"][0]["path"].endswith("broken.jpg")
    assert (tmp_path / "r" / REPORT_JSON).is_file() and (tmp_path / "r" / CONFUSION_PNG).is_file()


def test_eval_command_text_report(trained: Trained, eval_data: Path, tmp_path: Path) -> None:
    # --int8 falls back to the FP32 model: the quick bundle ships no INT8 variant.
    proc = run_cli("eval", "--bundle", str(trained.bundle), "--data", str(eval_data), "--int8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for expected in ("model.onnx", "accuracy", "dress", "shoes", "unseen kinds", UNSEEN, "unreadable images: 1"):
        assert expected in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong-key", "signature check failed"),
        ("tampered", "does not match its sha256"),
        ("no-data", "is not a folder"),
        ("empty-data", "no sub-folder with images"),
    ],
)
def test_eval_refuses_bad_input(trained: Trained, eval_data: Path, tmp_path: Path, case: str, message: str) -> None:
    bundle, data, extra = trained.bundle, eval_data, []
    if case == "wrong-key":
        extra = ["--public-key", "00" * 32]
    elif case == "tampered":
        bundle = tmp_path / "bundle"
        shutil.copytree(trained.bundle, bundle)
        with (bundle / "index_labels.json").open("a") as fh:
            fh.write(" ")
    elif case == "no-data":
        data = tmp_path / "missing"
    else:
        data = tmp_path / "empty"
        (data / "dress").mkdir(parents=True)
    proc = run_cli("eval", "--bundle", str(bundle), "--data", str(data), *extra, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_list_images_names_a_missing_folder(tmp_path: Path) -> None:
    from camfleet_trainer.evaluate import list_images

    with pytest.raises(DatasetError, match="missing"):
        list_images(tmp_path / "missing")


def test_a_big_bundle_shows_only_the_classes_in_play() -> None:
    """An ImageNet bundle judged on a few folders: the matrix keeps the rows and columns that have counts."""
    n = 1000
    confusion = np.zeros((n, n), dtype=np.int64)
    confusion[7, 7], confusion[7, 400], confusion[12, 12] = 3, 1, 2
    cm = confusion_matrix(np.array([7, 7, 7, 7, 12, 12]), np.array([7, 7, 7, 400, 12, 12]), n)
    assert (cm == confusion).all()
    classes = [f"class{i}" for i in range(n)]
    ev = Evaluation(
        bundle="b", version="v", model="model.onnx", classes=classes, images=6, accuracy=0.8333,
        balanced_accuracy=0.875, per_class=per_class_metrics(cm, classes), confusion=cm.tolist(), flagged=0,
        flag_rate=0.0, flag_rate_wrong=0.0, target_flag_rate=0.05,
    )  # fmt: skip
    assert shown_classes(ev) == [7, 12, 400]
    text = render_text(ev)
    assert "class400" in text and "class8 " not in text and "997 classes without images" in text
    img = confusion_image(ev)
    assert img.width < 600 and img.height < 600
