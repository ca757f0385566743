"""Model manager against a real loopback HTTP server serving real signed bundle zips."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from bundles import SITE, announcement_for, build_bundle, bundle_zip

from camfleet_agent.keys import PIN_FILE, FleetKey, FleetKeyError
from camfleet_agent.models.errors import ModelUpdateError
from camfleet_agent.models.manager import ModelManager
from camfleet_agent.models.store import ACTIVE_FILE, TRUST_FILE
from camfleet_contract.bundle import pack_bundle
from camfleet_contract.images import decode_image
from camfleet_contract.rollback import sign_rollback
from camfleet_contract.signing import generate_signing_key, public_key_of
from tests.support.polling import wait_for

CLF = "clothes"


def manager(data_dir: Path, hub_url: str, public_key: str, **kwargs: object) -> ModelManager:
    return ModelManager(data_dir, hub_url, lambda: public_key, site=SITE, **kwargs)  # type: ignore[arg-type]


def publish(hub, seed: str, version: str, **kwargs: object):  # type: ignore[no-untyped-def]
    """Build + serve a bundle; returns its announcement."""
    data = bundle_zip(seed, classifier=CLF, version=version, **kwargs)
    return announcement_for(data, hub.put(f"bundles/{CLF}-{version}.zip", data), CLF, version)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "agent"


@pytest.fixture
def active_v1(static_hub, fleet_seed: str, fleet_public: str, data_dir: Path) -> ModelManager:  # type: ignore[no-untyped-def]
    mm = manager(data_dir, static_hub.url, fleet_public)
    assert mm.apply(CLF, publish(static_hub, fleet_seed, "1")) is True
    return mm


def test_good_bundle_is_swapped_in(active_v1: ModelManager, data_dir: Path, image_folder: Path) -> None:
    runtime = active_v1.active()[CLF]
    assert active_v1.versions() == {CLF: "1"}
    assert runtime.bundle_dir == data_dir / "models" / CLF / "1"
    assert sorted(p.name for p in (data_dir / "models" / CLF).iterdir()) == ["1", ACTIVE_FILE, TRUST_FILE]
    rgb = decode_image(next(image_folder.glob("*.jpg")).read_bytes())
    result = runtime.classify([rgb])[0]
    assert result.label in ("dress", "hat", "shoes") and 0.0 <= result.anomaly_score <= 1.0


def test_same_version_is_not_downloaded_again(active_v1: ModelManager, static_hub, fleet_seed: str) -> None:  # type: ignore[no-untyped-def]
    before = len(static_hub.requests)
    assert active_v1.apply(CLF, publish(static_hub, fleet_seed, "1")) is False
    assert len(static_hub.requests) == before


def _wrong_sha(hub, seed: str):  # type: ignore[no-untyped-def]
    ann = publish(hub, seed, "2")
    return ann.model_copy(update={"sha256": "0" * 64})


def _other_key(hub, seed: str):  # type: ignore[no-untyped-def]
    return publish(hub, generate_signing_key(), "2")


def _truncated(hub, seed: str):  # type: ignore[no-untyped-def]
    data = bundle_zip(seed, classifier=CLF, version="2")[:-700]  # the announcement matches the truncated bytes
    return announcement_for(data, hub.put("bundles/truncated.zip", data), CLF, "2")


def _broken_onnx(hub, seed: str):  # type: ignore[no-untyped-def]
    return publish(hub, seed, "2", onnx_bytes=b"\x08\x07 this is not an onnx graph")


def _size_lie(hub, seed: str):  # type: ignore[no-untyped-def]
    ann = publish(hub, seed, "2")
    return ann.model_copy(update={"size": ann.size - 100})


def _version_lie(hub, seed: str):  # type: ignore[no-untyped-def]
    data = bundle_zip(seed, classifier=CLF, version="2")
    return announcement_for(data, hub.put("bundles/lie.zip", data), CLF, "3")


def _missing(hub, seed: str):  # type: ignore[no-untyped-def]
    ann = publish(hub, seed, "2")
    return ann.model_copy(update={"url": "/bundles/not-there.zip"})


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_wrong_sha, "sha256"),
        (_other_key, "signature"),
        (_truncated, "zip"),
        (_broken_onnx, "ONNX"),
        (_size_lie, "size"),
        (_version_lie, "version"),
        (_missing, "404"),
    ],
    ids=["wrong-sha256", "signed-by-another-key", "truncated-zip", "broken-onnx", "size-lie", "version-lie", "404"],
)
def test_bad_bundle_keeps_the_old_model(  # type: ignore[no-untyped-def]
    active_v1: ModelManager, static_hub, fleet_seed: str, data_dir: Path, make, reason: str
) -> None:
    old = active_v1.active()[CLF]
    with pytest.raises(ModelUpdateError, match=reason):
        active_v1.apply(CLF, make(static_hub, fleet_seed))
    assert active_v1.active()[CLF] is old
    assert sorted(p.name for p in (data_dir / "models" / CLF).iterdir()) == ["1", ACTIVE_FILE, TRUST_FILE]


def test_worker_logs_rejections_and_keeps_running(  # type: ignore[no-untyped-def]
    active_v1: ModelManager, static_hub, fleet_seed: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="camfleet_agent.models")
    active_v1.start()
    try:
        active_v1.submit(CLF, _other_key(static_hub, fleet_seed))
        active_v1.submit(CLF, publish(static_hub, fleet_seed, "3"))
        wait_for(lambda: active_v1.versions() == {CLF: "3"}, "version 3 to become active")
    finally:
        active_v1.stop()
    assert "rejected, keeping the current model" in caplog.text and "signature" in caplog.text


def test_transient_hub_errors_are_retried(static_hub, fleet_seed: str, fleet_public: str, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    mm = manager(data_dir, static_hub.url, fleet_public, retry_base_s=0.1, download_backoff_s=0.05)
    ann = publish(static_hub, fleet_seed, "1")
    static_hub.fail_next = 4  # more than one download round of retries
    mm.start()
    try:
        mm.submit(CLF, ann)
        wait_for(lambda: mm.versions() == {CLF: "1"}, "the download to succeed after 503s")
    finally:
        mm.stop()
    assert static_hub.fail_next == 0


def test_restart_loads_the_last_active_version(  # type: ignore[no-untyped-def]
    active_v1: ModelManager, static_hub, fleet_seed: str, fleet_public: str, data_dir: Path, image_folder: Path
) -> None:
    active_v1.apply(CLF, publish(static_hub, fleet_seed, "2"))
    restarted = manager(data_dir, "http://127.0.0.1:9", fleet_public)  # the hub is unreachable now
    restarted.load_from_disk()
    assert restarted.versions() == {CLF: "2"}
    rgb = decode_image(next(image_folder.glob("*.jpg")).read_bytes())
    assert restarted.active()[CLF].classify([rgb])[0].label in ("dress", "hat", "shoes")


def test_restart_falls_back_to_previous_when_active_is_damaged(  # type: ignore[no-untyped-def]
    active_v1: ModelManager, static_hub, fleet_seed: str, fleet_public: str, data_dir: Path
) -> None:
    active_v1.apply(CLF, publish(static_hub, fleet_seed, "2"))
    (data_dir / "models" / CLF / "2" / "model.onnx").write_bytes(b"tampered")
    restarted = manager(data_dir, static_hub.url, fleet_public)
    restarted.load_from_disk()
    assert restarted.versions() == {CLF: "1"}


def test_keeps_one_previous_version_and_rolls_back_without_download(  # type: ignore[no-untyped-def]
    active_v1: ModelManager, static_hub, fleet_seed: str, data_dir: Path
) -> None:
    ann2 = publish(static_hub, fleet_seed, "2")
    active_v1.apply(CLF, ann2)
    active_v1.apply(CLF, publish(static_hub, fleet_seed, "3"))
    clf_dir = data_dir / "models" / CLF
    assert sorted(p.name for p in clf_dir.iterdir()) == ["2", "3", ACTIVE_FILE, TRUST_FILE]
    (static_hub.root / ann2.url.lstrip("/")).unlink()  # a rollback must not need the hub
    rollback = sign_rollback(SITE, CLF, "2", "3", fleet_seed)  # a downgrade needs the hub's signed word
    assert active_v1.apply(CLF, ann2.model_copy(update={"rollback": rollback})) is True
    assert active_v1.versions() == {CLF: "2"}
    assert sorted(p.name for p in clf_dir.iterdir()) == ["2", "3", ACTIVE_FILE, TRUST_FILE]


def test_removal_deactivates_and_survives_restart(active_v1: ModelManager, fleet_public: str, data_dir: Path) -> None:
    active_v1.apply(CLF, None)
    assert active_v1.versions() == {}
    restarted = manager(data_dir, "http://127.0.0.1:9", fleet_public)
    restarted.load_from_disk()
    assert restarted.versions() == {}


def test_bundle_signed_by_other_key_on_disk_is_not_loaded(fleet_public: str, data_dir: Path) -> None:
    """Files planted on disk are verified like downloads."""
    other = generate_signing_key()
    build_bundle(data_dir / "models" / CLF / "1", other, classifier=CLF, version="1")
    (data_dir / "models" / CLF / ACTIVE_FILE).write_text('{"version": "1", "previous": null}')
    mm = manager(data_dir, "http://127.0.0.1:9", fleet_public)
    mm.load_from_disk()
    assert mm.versions() == {}
    assert pack_bundle(data_dir / "models" / CLF / "1")  # left in place for a person to inspect


def test_fleet_key_pinned_on_first_contact_and_a_new_one_refused(  # type: ignore[no-untyped-def]
    static_hub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = public_key_of(generate_signing_key()), public_key_of(generate_signing_key())
    static_hub.set_fleet_key(first)
    assert FleetKey("", tmp_path, static_hub.url, trust_on_first_use_http=True).get() == first
    assert (tmp_path / PIN_FILE).read_text().strip() == first
    static_hub.set_fleet_key(second)
    later = FleetKey("", tmp_path, static_hub.url, trust_on_first_use_http=True)
    with caplog.at_level(logging.ERROR, logger="camfleet_agent.keys"):
        later.check_hub()
    assert "refusing the new key" in caplog.text
    assert later.get() == first
    assert FleetKey(second, tmp_path, static_hub.url).get() == second  # a configured key wins


def test_fleet_key_unknown_when_hub_unreachable(tmp_path: Path) -> None:
    with pytest.raises(FleetKeyError, match="cannot fetch the fleet key"):
        FleetKey("", tmp_path, "http://127.0.0.1:9", timeout_s=2, trust_on_first_use_http=True).get()


def test_hub_token_goes_to_the_hub_only(static_hub, fleet_seed: str, fleet_public: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The configured api_token authorises bundle and key downloads from the hub, and is never sent elsewhere."""
    static_hub.set_fleet_key(fleet_public)
    assert FleetKey("", tmp_path / "k", static_hub.url, token="cf_secret", trust_on_first_use_http=True).get() == (
        fleet_public
    )
    assert static_hub.authorization[-1] == "Bearer cf_secret"
    mm = manager(tmp_path / "a", static_hub.url, fleet_public, token="cf_secret")
    assert mm.apply(CLF, publish(static_hub, fleet_seed, "1")) is True
    assert static_hub.authorization[-1] == "Bearer cf_secret"
    elsewhere = publish(static_hub, fleet_seed, "2")
    other_host = static_hub.url.replace("127.0.0.1", "localhost") + elsewhere.url
    before = len(static_hub.requests)
    with pytest.raises(ModelUpdateError, match="not on the hub's origin"):  # and so never gets the token
        mm.apply(CLF, elsewhere.model_copy(update={"url": other_host}))
    assert len(static_hub.requests) == before
    mm.stop()
