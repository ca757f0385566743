"""Issue 10, hole 3: an agent applies only a bundle signed for its site and classifier, never a downgrade without a
hub-signed rollback, no file the manifest does not list, downloads only from its hub, and trusts the fleet key
only when pinned, fetched over HTTPS, or with an explicit opt-in. Real bundles over a real loopback HTTP server.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bundles import SITE, announcement_for, bundle_zip

from camfleet_agent.config import AgentSettings
from camfleet_agent.keys import PIN_FILE, FleetKey, FleetKeyError
from camfleet_agent.models.errors import ModelUpdateError
from camfleet_agent.models.manager import ModelManager
from camfleet_agent.models.store import TRUST_FILE
from camfleet_contract.bundle import DEFAULT_CLASSIFIER, DEFAULT_SITE, INDEX, INDEX_LABELS
from camfleet_contract.config import ConfigError, load_config
from camfleet_contract.rollback import sign_rollback
from camfleet_contract.signing import fingerprint, generate_signing_key, public_key_of

CLF = "clothes"


def manager(data_dir: Path, hub_url: str, public_key: str) -> ModelManager:
    return ModelManager(data_dir, hub_url, lambda: public_key, site=SITE)


def publish(hub, seed: str, version: str, classifier: str = CLF, **kwargs: object):  # type: ignore[no-untyped-def]
    data = bundle_zip(seed, classifier=classifier, version=version, **kwargs)
    name = f"bundles/{kwargs.get('site', SITE)}-{classifier}-{version}.zip"
    return announcement_for(data, hub.put(name, data), classifier, version)


@pytest.fixture
def mm(static_hub, fleet_public: str, tmp_path: Path) -> ModelManager:  # type: ignore[no-untyped-def]
    return manager(tmp_path / "agent", static_hub.url, fleet_public)


# ---------------------------------------------------------------------------------------------- scope


def test_bundle_signed_for_another_site_is_refused(mm: ModelManager, static_hub, fleet_seed: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelUpdateError, match="manifest site='other' but this agent is in site 'shop'"):
        mm.apply(CLF, publish(static_hub, fleet_seed, "1", site="other"))
    assert mm.versions() == {}
    assert mm.apply(CLF, publish(static_hub, fleet_seed, "1")) is True


def test_bundle_of_another_classifier_is_refused(mm: ModelManager, static_hub, fleet_seed: str) -> None:  # type: ignore[no-untyped-def]
    """Before: only a warning was logged and the bundle ran as the announced classifier."""
    lights = publish(static_hub, fleet_seed, "1", classifier="lights")
    with pytest.raises(ModelUpdateError, match="manifest classifier='lights' but this is classifier 'clothes'"):
        mm.apply(CLF, lights.model_copy(update={"classifier": CLF}))
    assert mm.versions() == {}


def test_default_bundle_runs_only_as_the_default_classifier(mm: ModelManager, static_hub, fleet_seed: str) -> None:  # type: ignore[no-untyped-def]
    default = publish(static_hub, fleet_seed, "4", classifier=DEFAULT_CLASSIFIER, site=DEFAULT_SITE)
    with pytest.raises(ModelUpdateError, match="classifier"):  # replayed on a site classifier's topic
        mm.apply(CLF, default.model_copy(update={"classifier": CLF}))
    # Even a "*" manifest naming the site classifier itself is not the default bundle.
    fleetwide = publish(static_hub, fleet_seed, "1", site=DEFAULT_SITE)
    with pytest.raises(ModelUpdateError, match="manifest site='\\*'"):
        mm.apply(CLF, fleetwide)
    assert mm.versions() == {}
    assert mm.apply(DEFAULT_CLASSIFIER, default) is True
    assert mm.versions() == {DEFAULT_CLASSIFIER: "4"}


def test_unassigned_manifest_is_refused(mm: ModelManager, static_hub, fleet_seed: str) -> None:  # type: ignore[no-untyped-def]
    """A trainer's bundle before the hub assigned it a site (site "") is not for any agent."""
    with pytest.raises(ModelUpdateError, match="manifest site=''"):
        mm.apply(CLF, publish(static_hub, fleet_seed, "1", site=""))


def test_bundle_on_disk_for_another_site_is_not_loaded(
    static_hub,
    fleet_seed: str,
    fleet_public: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    other_site = ModelManager(tmp_path / "agent", static_hub.url, lambda: fleet_public, site="other")
    assert other_site.apply(CLF, publish(static_hub, fleet_seed, "1", site="other")) is True
    moved = manager(tmp_path / "agent", "http://127.0.0.1:9", fleet_public)  # same disk, now in site "shop"
    moved.load_from_disk()
    assert moved.versions() == {}


# ---------------------------------------------------------------------------------------------- versions


@pytest.fixture
def at_v3(mm: ModelManager, static_hub, fleet_seed: str) -> ModelManager:  # type: ignore[no-untyped-def]
    for version in ("1", "3"):
        assert mm.apply(CLF, publish(static_hub, fleet_seed, version)) is True
    return mm


def test_downgrade_is_refused_and_the_mark_survives_a_restart(  # type: ignore[no-untyped-def]
    at_v3: ModelManager, static_hub, fleet_seed: str, fleet_public: str, tmp_path: Path
) -> None:
    """Before: any older version the hub ever signed was applied (a replay downgraded the agent)."""
    v2 = publish(static_hub, fleet_seed, "2")
    with pytest.raises(ModelUpdateError, match="below version 3 already applied.*without a signed rollback"):
        at_v3.apply(CLF, v2)
    assert at_v3.versions() == {CLF: "3"}
    at_v3.apply(CLF, None)  # withdrawn: the mark stays on disk
    restarted = manager(tmp_path / "agent", static_hub.url, fleet_public)
    restarted.load_from_disk()
    assert restarted.versions() == {}
    with pytest.raises(ModelUpdateError, match="below version 3"):
        restarted.apply(CLF, v2)
    assert (tmp_path / "agent" / "models" / CLF / TRUST_FILE).is_file()
    assert restarted.apply(CLF, publish(static_hub, fleet_seed, "4")) is True


def test_non_numeric_version_is_refused(mm: ModelManager, static_hub, fleet_seed: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelUpdateError, match="not a whole number"):
        mm.apply(CLF, publish(static_hub, fleet_seed, "v9"))


def test_signed_rollback_is_applied_once(at_v3: ModelManager, static_hub, fleet_seed: str) -> None:  # type: ignore[no-untyped-def]
    t0 = datetime.now(UTC)
    v2 = publish(static_hub, fleet_seed, "2")
    first = sign_rollback(SITE, CLF, "2", "3", fleet_seed, issued_at=t0)
    assert at_v3.apply(CLF, v2.model_copy(update={"rollback": first})) is True
    assert at_v3.versions() == {CLF: "2"}
    # The withdrawn version cannot come back from a replay of its old announcement; a new release can.
    with pytest.raises(ModelUpdateError, match="version 3 of clothes was withdrawn by a signed rollback"):
        at_v3.apply(CLF, publish(static_hub, fleet_seed, "3"))
    # The same statement again cannot move the agent between withdrawn versions (replay).
    v1 = publish(static_hub, fleet_seed, "1")
    replay = sign_rollback(SITE, CLF, "1", "3", fleet_seed, issued_at=t0)
    with pytest.raises(ModelUpdateError, match="issued at or before the last one accepted"):
        at_v3.apply(CLF, v1.model_copy(update={"rollback": replay}))
    later = sign_rollback(SITE, CLF, "1", "3", fleet_seed, issued_at=t0 + timedelta(seconds=1))
    assert at_v3.apply(CLF, v1.model_copy(update={"rollback": later})) is True
    # Version 2 is withdrawn too (up to 3): it needs a newer signed rollback again.
    with pytest.raises(ModelUpdateError, match="version 2 of clothes was withdrawn"):
        at_v3.apply(CLF, v2)
    assert at_v3.apply(CLF, publish(static_hub, fleet_seed, "4")) is True


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        (lambda seed: sign_rollback(SITE, CLF, "2", "3", generate_signing_key()), "not signed by the fleet key"),
        (lambda seed: sign_rollback(SITE, CLF, "1", "3", seed), "the rollback names"),
        (lambda seed: sign_rollback(SITE, "lights", "2", "3", seed), "the rollback names"),
        (lambda seed: sign_rollback("other", CLF, "2", "3", seed), "the rollback names"),
        (lambda seed: sign_rollback(SITE, CLF, "2", "2", seed), "withdraws versions up to 2 only"),
        (
            lambda seed: sign_rollback(SITE, CLF, "2", "3", seed).model_copy(update={"replaces": "9"}),
            "not signed by the fleet key",
        ),
    ],
    ids=["other-key", "other-version", "other-classifier", "other-site", "old-statement", "tampered"],
)
def test_bad_rollback_is_refused(at_v3: ModelManager, static_hub, fleet_seed: str, statement, reason: str) -> None:  # type: ignore[no-untyped-def]
    v2 = publish(static_hub, fleet_seed, "2")
    with pytest.raises(ModelUpdateError, match=reason):
        at_v3.apply(CLF, v2.model_copy(update={"rollback": statement(fleet_seed)}))
    assert at_v3.versions() == {CLF: "3"}


# ---------------------------------------------------------------------------------------------- files


def _append(data: bytes, entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a", compression=zipfile.ZIP_STORED) as zf:
        for name, content in entries.items():
            zf.writestr(name, content)
    return buf.getvalue()


def test_file_not_in_the_manifest_is_refused_before_parsing(mm: ModelManager, static_hub, fleet_seed: str) -> None:  # type: ignore[no-untyped-def]
    """Before: an index.usearch appended to a signed bundle without one was read by the native parser."""
    signed = bundle_zip(fleet_seed, classifier=CLF, version="1", with_index=False)
    # Garbage the native parser would choke on: the refusal must come first and name the file.
    data = _append(signed, {INDEX: b"\xff" * 4096, INDEX_LABELS: b"[0, 1]"})
    ann = announcement_for(data, static_hub.put("bundles/appended.zip", data), CLF, "1")
    with pytest.raises(ModelUpdateError, match=r"\['index.usearch', 'index_labels.json'\] are not listed"):
        mm.apply(CLF, ann)
    assert mm.versions() == {}
    assert not (mm.models_dir / CLF / "1").exists()


# ---------------------------------------------------------------------------------------------- origin


def test_download_only_from_the_hub_origin(mm: ModelManager, static_hub, fleet_seed: str) -> None:  # type: ignore[no-untyped-def]
    ann = publish(static_hub, fleet_seed, "1")
    port = static_hub.url.rsplit(":", 1)[1]
    foreign = [
        f"http://localhost:{port}{ann.url}",  # another host name for the same server: still not the origin
        f"https://127.0.0.1:{port}{ann.url}",
        f"http://127.0.0.1:{int(port) + 1}{ann.url}",
        f"//localhost:{port}{ann.url}",
        f"ftp://127.0.0.1:{port}{ann.url}",
    ]
    for url in foreign:
        with pytest.raises(ModelUpdateError, match="not on the hub's origin"):
            mm.apply(CLF, ann.model_copy(update={"url": url}))
    assert static_hub.requests == []
    assert mm.apply(CLF, ann.model_copy(update={"url": ann.url.lstrip("/")})) is True  # relative: on the hub
    assert static_hub.requests == [ann.url]
    same_origin = publish(static_hub, fleet_seed, "2")
    assert mm.apply(CLF, same_origin.model_copy(update={"url": static_hub.url + same_origin.url})) is True


def test_relative_path_keeps_the_hub_url_prefix(fleet_public: str, tmp_path: Path) -> None:
    mm = ModelManager(tmp_path, "https://hub.example:8443/camfleet/", lambda: fleet_public, site=SITE)
    assert (
        mm.downloader.bundle_url("/api/v1/models/3/bundle")
        == "https://hub.example:8443/camfleet/api/v1/models/3/bundle"
    )
    assert (
        mm.downloader.bundle_url("api/v1/models/3/bundle") == "https://hub.example:8443/camfleet/api/v1/models/3/bundle"
    )
    assert mm.downloader.bundle_url("https://HUB.example:8443/x") == "https://hub.example:8443/x"
    with pytest.raises(ModelUpdateError, match="origin"):
        mm.downloader.bundle_url("https://hub.example/x")  # port 443, not 8443


# ---------------------------------------------------------------------------------------------- fleet key


def test_key_over_plain_http_needs_an_explicit_setting(static_hub, fleet_public: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Before: the first key the hub (or anyone on the path) offered over http:// was pinned."""
    static_hub.set_fleet_key(fleet_public)
    with pytest.raises(FleetKeyError, match="trust_on_first_use_http = true"):
        FleetKey("", tmp_path, static_hub.url).get()
    assert static_hub.requests == [] and not (tmp_path / PIN_FILE).exists()
    assert FleetKey("", tmp_path, static_hub.url, trust_on_first_use_http=True).get() == fleet_public


def test_key_pinned_by_fingerprint(static_hub, fleet_public: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    static_hub.set_fleet_key(fleet_public)
    assert FleetKey("", tmp_path / "a", static_hub.url, fingerprint_sha256=fingerprint(fleet_public)).get() == (
        fleet_public
    )
    assert (tmp_path / "a" / PIN_FILE).read_text().strip() == fleet_public
    impostor = public_key_of(generate_signing_key())
    static_hub.set_fleet_key(impostor)
    with pytest.raises(FleetKeyError, match="not the configured fingerprint"):
        FleetKey("", tmp_path / "b", static_hub.url, fingerprint_sha256=fingerprint(fleet_public)).get()
    assert not (tmp_path / "b" / PIN_FILE).exists()
    # A pin left on disk that does not match the configured fingerprint is not used either.
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / PIN_FILE).write_text(impostor + "\n")
    with pytest.raises(FleetKeyError, match="not the configured fingerprint"):
        FleetKey("", tmp_path / "c", static_hub.url, fingerprint_sha256=fingerprint(fleet_public)).get()
    with pytest.raises(FleetKeyError, match="does not match"):
        FleetKey(impostor, tmp_path / "d", static_hub.url, fingerprint_sha256=fingerprint(fleet_public))


def test_model_trust_settings(tmp_path: Path, fleet_public: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'agent = "a"\nsite = "s"\n[models]\nfleet_key_sha256 = "{fingerprint(fleet_public).upper()}"\n'
        "trust_on_first_use_http = false\n"
    )
    settings = load_config(AgentSettings, config, "CAMFLEET_TEST_NONE")
    assert settings.models.fleet_key_sha256 == fingerprint(fleet_public)
    assert AgentSettings(agent="a", site="s").models.trust_on_first_use_http is False
    config.write_text('agent = "a"\nsite = "s"\n[models]\nfleet_key_sha256 = "abc"\n')
    with pytest.raises(ConfigError, match="fleet_key_sha256"):
        load_config(AgentSettings, config, "CAMFLEET_TEST_NONE")
