"""The command line, run as a real subprocess: `classify` on real photos and `run` against Mosquitto."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bundles import announcement_for, build_bundle, bundle_zip
from mqttkit import mqtt_publish

from camfleet_contract.messages import AgentStatus, Event, from_json, to_json
from camfleet_contract.signing import generate_signing_key, public_key_of
from camfleet_contract.topics import Topics

CLI = [sys.executable, "-m", "camfleet_agent"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An unpacked signed bundle and the public key it was signed with."""
    seed = generate_signing_key()
    path = tmp_path_factory.mktemp("cli") / "bundle"
    build_bundle(path, seed, classifier="clothes", version="7")
    return path, public_key_of(seed)


def test_classify_json_lines_with_a_bad_image(bundle: tuple[Path, str], image_folder: Path, tmp_path: Path) -> None:
    path, _key = bundle
    images = sorted(str(p) for p in image_folder.glob("*.jpg"))
    missing = str(tmp_path / "missing.jpg")
    not_image = str(image_folder / "01a_notes.txt")
    proc = run_cli("classify", "--bundle", str(path), images[0], missing, not_image, images[1], "--json")
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["path"] for line in lines] == [images[0], missing, not_image, images[1]]
    for line in (lines[0], lines[3]):
        assert line["label"] in ("dress", "hat", "shoes") and 0.0 <= line["probability"] <= 1.0
        assert isinstance(line["anomaly"], bool) and 0.0 <= line["anomaly_score"] <= 1.0
        assert line["model_version"] == "7" and line["predictions"][0]["label"] == line["label"]
    assert "error" in lines[1] and "No such file" in lines[1]["error"]
    assert "error" in lines[2] and "not a readable image" in lines[2]["error"]
    assert "not against a trusted key" in proc.stderr


def test_classify_with_trusted_key_and_table_output(bundle: tuple[Path, str], image_folder: Path) -> None:
    path, key = bundle
    image = str(sorted(image_folder.glob("*.jpg"))[0])
    proc = run_cli("classify", "--bundle", str(path), "--public-key", key, "--top-k", "2", image)
    assert proc.returncode == 0, proc.stderr
    assert "trusted key" not in proc.stderr
    header, row = proc.stdout.splitlines()
    assert header.split()[:3] == ["path", "label", "prob"]
    assert row.startswith(image) and "clothes/7" in row


def test_classify_rejects_bundle_signed_by_another_key(bundle: tuple[Path, str], image_folder: Path) -> None:
    path, _key = bundle
    other = public_key_of(generate_signing_key())
    proc = run_cli("classify", "--bundle", str(path), "--public-key", other, str(next(image_folder.glob("*.jpg"))))
    assert proc.returncode == 2
    assert "signature" in proc.stderr and proc.stdout == ""


def test_run_rejects_bad_config_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('agent = "a"\nsite = "s"\n[mqtt]\nport = 0\n')
    proc = run_cli("run", "--config", str(config))
    assert proc.returncode == 2
    assert "mqtt.port" in proc.stderr


def test_run_rejects_a_missing_camera_source(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    missing = tmp_path / "no-such-clip.avi"
    config.write_text(f'agent = "a"\nsite = "s"\n[[cameras]]\nname = "c"\nsource = "{missing}"\n')
    proc = run_cli("run", "--config", str(config))
    assert proc.returncode == 2
    assert "no-such-clip.avi" in proc.stderr


def test_run_publishes_events_and_stops_cleanly_on_sigterm(  # type: ignore[no-untyped-def]
    mosquitto, static_hub, fleet_seed: str, fleet_public: str, image_folder: Path, tmp_path: Path, site: str, collector
) -> None:
    topics = Topics()
    data = bundle_zip(fleet_seed, classifier="clothes", version="1", site=site)
    ann = announcement_for(data, static_hub.put("b/clothes-1.zip", data), "clothes", "1")
    mqtt_publish(mosquitto.host, mosquitto.port, topics.model(site, "clothes"), to_json(ann), retain=True)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'agent = "cli-agent"\nsite = "{site}"\nhub_url = "{static_hub.url}"\ndata_dir = "{tmp_path / "state"}"\n'
        f'fleet_public_key = "{fleet_public}"\n\n[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n\n'
        f'[[cameras]]\nname = "hall"\nsource = "{image_folder}"\nfps = 5\nupload_interval_s = 1\n'
    )
    seen = collector(f"camfleet/v1/{site}/#")
    log = (tmp_path / "agent.log").open("w")
    proc = subprocess.Popen([*CLI, "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        seen.wait_for(
            lambda m: m.topic.endswith("/event") and from_json(Event, m.payload).model_version == "1",
            "an event from the agent process",
        )
        online = seen.wait_for(lambda m: m.topic.endswith("/status"), "its status")
        assert from_json(AgentStatus, online.payload).state == "online"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, (tmp_path / "agent.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()
    offline = seen.wait_for(
        lambda m: m.topic.endswith("/status") and from_json(AgentStatus, m.payload).state == "offline",
        "the offline status",
    )
    assert from_json(AgentStatus, offline.payload).cameras == ["hall"]  # the full status, not the bare last-will
