"""The worker's dataset download: every image now, or on first read when the hub's embeddings make most of them
unnecessary; an image the hub no longer has is skipped (now) or fails its read like an unreadable file (lazy)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from camfleet_contract.rest import Dataset
from camfleet_trainer.client import HubError
from camfleet_trainer.config import TrainerSettings
from camfleet_trainer.worker import Worker

HAT = b"pretend jpeg bytes"
GONE = "f" * 64


class FakeHub:
    """The two calls `_dataset` makes, with one image whose blob is gone; counts the downloads."""

    def __init__(self, bad_sha: str | None = None, none_classes: tuple[str, ...] = ()) -> None:
        self.fetched: list[str] = []
        self.none_classes = list(none_classes)
        self.images: list[dict[str, object]] = [
            {"id": 1, "sha256": hashlib.sha256(HAT).hexdigest(), "group": "hat", "cluster": 1},
            {"id": 2, "sha256": bad_sha or GONE, "group": "hat", "cluster": 2},
        ]

    def dataset(self, job_id: int) -> Dataset:
        return Dataset.model_validate(
            {
                "job_id": job_id,
                "site": "s",
                "classes": ["hat", "none"],
                "none_classes": self.none_classes,
                "classifier": "clothes",
                "images": self.images,
            }
        )

    def blob(self, sha256: str) -> bytes | None:
        self.fetched.append(sha256)
        return HAT if sha256 == self.images[0]["sha256"] else None


class Reporter:
    def update(self, stage: str, progress: float, message: str) -> None:
        pass


def _worker(tmp_path: Path, hub: FakeHub) -> Worker:
    settings = TrainerSettings(hub_url="http://127.0.0.1:9", worker="w", cache_dir=tmp_path, device="cpu")
    return Worker(settings, client=hub)  # type: ignore[arg-type]


def test_eager_download_skips_what_the_hub_no_longer_has(tmp_path: Path) -> None:
    hub = FakeHub()
    data, name = _worker(tmp_path, hub).images.dataset(7, Reporter())  # type: ignore[arg-type]
    assert name == "clothes" and [s.name for s in data.samples] == ["image 1"]
    assert data.samples[0].read() == HAT and len(hub.fetched) == 2


def test_lazy_download_fetches_on_first_read_only(tmp_path: Path) -> None:
    hub = FakeHub()
    data, _ = _worker(tmp_path, hub).images.dataset(7, Reporter(), lazy=True)  # type: ignore[arg-type]
    assert [s.name for s in data.samples] == ["image 1", "image 2"] and hub.fetched == []
    assert data.samples[0].read() == HAT and data.samples[0].read() == HAT
    assert len(hub.fetched) == 1  # cached by sha256 after the first read
    with pytest.raises(FileNotFoundError, match="missing on the hub"):  # an OSError: embedding skips the image
        data.samples[1].read()


def test_a_malformed_hash_is_refused_before_it_names_a_file(tmp_path: Path) -> None:
    with pytest.raises(HubError, match="not a lowercase hex digest"):
        _worker(tmp_path, FakeHub(bad_sha="../../etc/passwd")).images.dataset(7, Reporter(), lazy=True)  # type: ignore[arg-type]


def test_the_hubs_none_of_the_above_groups_reach_the_training_set(tmp_path: Path) -> None:
    hub = FakeHub(none_classes=("none", "gone"))  # a name that is not a class of the job is ignored
    data, _ = _worker(tmp_path, hub).images.dataset(7, Reporter(), lazy=True)  # type: ignore[arg-type]
    assert data.classes == ["hat", "none"] and data.none_classes == ["none"]
    assert data.none_mask().tolist() == [False, True]
