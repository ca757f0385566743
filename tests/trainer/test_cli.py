"""The `camfleet-trainer` command line, run as a user would (a subprocess)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from camfleet_contract.bundle import verify_bundle
from camfleet_contract.config import ConfigError
from camfleet_trainer.config import TrainerSettings, load_settings


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "camfleet_trainer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_train_command_writes_a_bundle_and_a_report(clothing_subset: Path, trainer_cache: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(clothing_subset / "train", data)
    (data / "hat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    out = tmp_path / "bundle"
    proc = run_cli(
        "train", "--data", str(data), "--out", str(out), "--cache-dir", str(trainer_cache),
        "--classifier", "wardrobe", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = proc.stdout
    for expected in ("OOF", "anomaly", "threshold", "dress", "hat", "shoes", "precision", "recall", "time"):
        assert expected in report, report
    manifest = verify_bundle(out, None)
    assert f"labels     about {manifest.metrics['likely_mislabelled']} look wrong" in report, report
    assert "1 skipped" in report and "broken.jpg" in report
    assert manifest.classifier == "wardrobe" and manifest.classes == ["dress", "hat", "shoes"]
    assert manifest.metrics["skipped_images"] == 1


def test_train_refuses_a_single_class(clothing_subset: Path, trainer_cache: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(clothing_subset / "train" / "dress", data / "dress")
    proc = run_cli("train", "--data", str(data), "--out", str(tmp_path / "b"), "--cache-dir", str(trainer_cache),
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert "at least 2 classes" in proc.stderr and "'dress'" in proc.stderr, proc.stderr
    assert not (tmp_path / "b").exists()


def test_train_refuses_a_class_with_one_image(clothing_subset: Path, trainer_cache: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(clothing_subset / "train" / "dress", data / "dress")
    (data / "hat").mkdir()
    shutil.copy(next((clothing_subset / "train" / "hat").glob("*.jpg")), data / "hat")
    proc = run_cli("train", "--data", str(data), "--out", str(tmp_path / "b"), "--cache-dir", str(trainer_cache),
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert "'hat' has 1" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--classifier", "bad name!"], "--classifier='bad name!' is not a valid name"),
        (["--flag-rate", "1.5"], "--flag-rate must be between 0 and 1"),
        (["--none-group", "cats"], "none-of-the-above classes ['cats'] are not among the classes"),
        (["--none-group", "dress", "--none-group", "hat", "--none-group", "shoes"], "every class is marked none"),
    ],
)
def test_train_refuses_bad_arguments(clothing_subset: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    proc = run_cli("train", "--data", str(clothing_subset / "train"), "--out", str(tmp_path / "b"), *extra,
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_train_keeps_an_existing_folder(clothing_subset: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    proc = run_cli("train", "--data", str(clothing_subset / "train"), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2 and "use --force" in proc.stderr, proc.stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_help_lists_the_commands(tmp_path: Path) -> None:
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for command in ("worker", "train", "export-default"):
        assert command in proc.stdout


def test_settings_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "trainer.toml"
    path.write_text(f'hub_url = "http://127.0.0.1:8600/"\nworker = "t1"\ncache_dir = "{tmp_path / "c"}"\n')
    monkeypatch.setenv("CAMFLEET_TRAINER__POLL_INTERVAL_S", "0.5")
    settings = load_settings(path)
    assert settings.hub_url == "http://127.0.0.1:8600"
    assert settings.worker == "t1" and settings.poll_interval_s == 0.5
    assert settings.key_path == tmp_path / "c" / "trainer.key"
    assert TrainerSettings().worker  # defaults to the host name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('hub_adress = "http://x"\n', "hub_adress"),
        ('hub_url = "ftp://hub"\n', "ftp://hub"),
        ('device = "tpu"\n', "tpu"),
        ("poll_interval_s = -1\n", "poll_interval_s"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "trainer.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path)
