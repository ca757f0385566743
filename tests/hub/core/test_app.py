"""Settings, the Hub builder (embedded defaults end to end) and the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from hubcore_helpers import frame_payload, hub_settings, seed_site, unique, wait_for
from sqlalchemy import func, inspect, select

from camfleet_contract.config import ConfigError, load_config
from camfleet_contract.signing import public_key_of
from camfleet_contract.topics import Topics
from camfleet_hub.app import Hub, HubServices, HubStartError
from camfleet_hub.core.comms.mqtt import MqttClient
from camfleet_hub.core.config import ENV_PREFIX, HubSettings, load_settings, reveal
from camfleet_hub.core.db.session import make_engine, make_sessionmaker, migrate
from camfleet_hub.core.store import DirectoryStore
from camfleet_hub.datasets.models import Frame
from camfleet_hub.ingest.stats import IngestStats
from camfleet_hub.ingest.worker import IngestWorker

# ---------------------------------------------------------------- settings


def test_defaults() -> None:
    s = HubSettings()
    assert (s.http.host, s.http.port, s.mqtt.port, s.mqtt.root) == ("127.0.0.1", 8600, 11883, "camfleet")
    assert s.mqtt.embedded and s.ingest.enabled and s.store.kind == "dir"
    assert s.db_url() == f"sqlite:///{(Path('var/hub') / 'hub.db').absolute()}"
    assert s.http.base_url() == "http://127.0.0.1:8600"


def test_file_and_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('data_dir = "/srv/hub"\n[mqtt]\nembedded = false\nhost = "mqtt.local"\n[store]\nkind = "s3"\n')
    env = {f"{ENV_PREFIX}__MQTT__PORT": "1884", f"{ENV_PREFIX}__MQTT__PASSWORD": "1234", "OTHER": "x"}
    s = load_config(HubSettings, path, ENV_PREFIX, environ=env)
    assert (s.mqtt.host, s.mqtt.port, reveal(s.mqtt.password), s.store.kind) == ("mqtt.local", 1884, "1234", "s3")
    assert s.db_url() == "sqlite:////srv/hub/hub.db"
    assert s.store_path() == Path("/srv/hub/objects") and s.key_path() == Path("/srv/hub/fleet.key")


def test_postgres_url_is_left_alone() -> None:
    s = HubSettings.model_validate({"db": {"url": "postgresql+psycopg2://u:p@db/hub"}})
    assert s.db_url() == "postgresql+psycopg2://u:p@db/hub"


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("[mqtt]\nportt = 1\n", "mqtt.portt"),
        ("[store]\nkind = 'ftp'\n", "store.kind"),
        ("[http]\nport = 70000\n", "http.port"),
        ("[mqtt]\nshared_group = 'a/b'\n", "mqtt.shared_group"),
        ("unknown = 1\n", "unknown"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, toml: str, field: str) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_settings(path)


# ---------------------------------------------------------------- the builder


def _embedded_settings(tmp_path: Path, free_port: Callable[[], int], **extra: object) -> HubSettings:
    return HubSettings.model_validate(
        {
            "data_dir": str(tmp_path / "hub"),
            "http": {"port": free_port()},
            "mqtt": {"port": free_port()},
            **extra,
        }
    )


def test_hub_on_embedded_defaults_ingests_a_frame(
    tmp_path: Path, free_port: Callable[[], int], jpegs: list[bytes]
) -> None:
    settings = _embedded_settings(tmp_path, free_port)
    with Hub(settings, http=False) as hub:
        services = hub.services
        assert isinstance(services, HubServices)
        assert isinstance(services.store, DirectoryStore)
        assert services.mqtt.connected
        assert len(public_key_of(services.fleet_signing_key)) == 64
        assert (tmp_path / "hub" / "hub.db").exists() and (tmp_path / "hub" / "fleet.key").exists()
        seed_site(services.engine)
        assert hub.ingest is not None and hub.ingest.client.subscribed.wait(10)
        services.mqtt.publish(services.topics.frame("shop", "cam1"), frame_payload(jpegs[0], "shop", "cam1"))
        wait_for(lambda: services.ingest_stats.snapshot().accepted == 1, "the frame through the embedded broker")
        with services.sessions() as s:
            assert s.execute(select(func.count()).select_from(Frame)).scalar_one() == 1
        key = services.fleet_signing_key
    assert hub.broker is not None and not hub.broker.running
    with Hub(settings, http=False, ingest=False) as hub:  # restart: same key, same database
        assert hub.services is not None and hub.services.fleet_signing_key == key


def test_hub_serves_http(tmp_path: Path, free_port: Callable[[], int]) -> None:
    pytest.importorskip("camfleet_hub.api")
    settings = _embedded_settings(tmp_path, free_port)
    with Hub(settings) as hub:
        response = httpx.get(f"{hub.url}/api/v1/health", timeout=10)
        assert response.status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{hub.url}/api/v1/health", timeout=2)


def test_start_failure_stops_what_started(tmp_path: Path, free_port: Callable[[], int]) -> None:
    settings = _embedded_settings(tmp_path, free_port)
    with Hub(settings, http=False, ingest=False) as first:
        second = Hub(settings, http=False, ingest=False)
        with pytest.raises(Exception, match="mqtt.port"):
            second.start()
        assert second._stops == []  # everything the failed start began was stopped again
        assert first.services is not None and first.services.mqtt.connected


# ---------------------------------------------------------------- command line


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAMFLEET_")}
    return subprocess.run(
        [sys.executable, "-m", "camfleet_hub", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
        cwd=cwd,
    )


def test_cli_help_lists_commands() -> None:
    result = _cli("--help")
    assert result.returncode == 0
    for command in ("serve", "ingest", "migrate", "demo"):
        assert command in result.stdout


def test_cli_migrate(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    result = _cli("migrate", "--config", str(path))
    assert result.returncode == 0, result.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'hub.db'}")
    try:
        assert "frames" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_cli_migrate_postgresql(pg_url: str, tmp_path: Path) -> None:
    result = _cli("migrate", env={f"{ENV_PREFIX}__DB__URL": pg_url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    engine = make_engine(pg_url)
    try:
        assert "images" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_cli_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text("[ingest]\nbatch_size = 0\n")
    result = _cli("migrate", "--config", str(path))
    assert result.returncode == 2
    assert "ingest.batch_size" in result.stderr
    result = _cli("serve", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_cli_serve_stops_cleanly_on_sigterm(tmp_path: Path, free_port: Callable[[], int]) -> None:
    pytest.importorskip("camfleet_hub.api")
    port = free_port()
    path = tmp_path / "hub.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n[http]\nport = {port}\n[mqtt]\nport = {free_port()}\n')
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMFLEET_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "camfleet_hub", "serve", "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for(lambda: proc.poll() is not None or "running at" in log.read_text(), "the hub to serve", 60)
        assert proc.poll() is None, log.read_text()
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "stopped embedded broker" in text and "stopped database" in text


def test_shared_group_needs_an_external_broker(tmp_path: Path, free_port: Callable[[], int]) -> None:
    settings = _embedded_settings(tmp_path, free_port, mqtt={"port": free_port(), "shared_group": "hubs"})
    with pytest.raises(HubStartError, match="mqtt.shared_group"):
        Hub(settings, http=False).start()


def test_shared_subscription_on_mosquitto(
    tmp_path: Path,
    mosquitto,
    jpegs: list[bytes],  # type: ignore[no-untyped-def]
) -> None:
    """Two ingest workers in one shared group split the frames; each frame is stored exactly once."""

    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    engine = make_engine(db_url)
    migrate(engine)
    seed_site(engine)
    base = hub_settings(tmp_path, db_url, mosquitto.host, mosquitto.port)
    group = unique("g")
    stats = [IngestStats(), IngestStats()]
    workers = []
    for n in range(2):
        mqtt = base.mqtt.model_copy(update={"client_id": unique(f"shared{n}-"), "shared_group": group})
        settings = base.model_copy(update={"mqtt": mqtt})
        workers.append(
            IngestWorker(settings, make_sessionmaker(engine), DirectoryStore(tmp_path / "objects"), stats[n])
        )
    pub = MqttClient(mosquitto.host, mosquitto.port, unique("pub-"))
    try:
        for w in workers:
            assert w.start(10) and w.client.subscribed.wait(10)
        assert pub.start(10)
        topic = Topics(base.mqtt.root).frame("shop", "cam1")
        for jpeg in jpegs:
            pub.publish(topic, frame_payload(jpeg, "shop", "cam1"), qos=1).wait_for_publish(10)
        wait_for(lambda: sum(s.snapshot().accepted for s in stats) == len(jpegs), "all frames across both")
        assert sum(s.snapshot().duplicates for s in stats) == 0
        with make_sessionmaker(engine)() as s:
            assert s.execute(select(func.count()).select_from(Frame)).scalar_one() == len(jpegs)
    finally:
        pub.stop()
        for w in workers:
            w.stop()
        engine.dispose()
