"""Typed hub configuration: one pydantic model per concern, unknown keys rejected, loaded in one place.

Example ``hub.toml``::

    data_dir = "var/hub"
    [http]
    port = 8600
    [mqtt]
    embedded = false
    host = "mqtt.example"
    port = 1883
    [db]
    url = "postgresql+psycopg2://hub:secret@db/hub"
    [store]
    kind = "s3"
    endpoint = "s3.example:8333"
    bucket = "camfleet"

Every key can be overridden from the environment: ``CAMFLEET_HUB__MQTT__PORT=1884``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from camfleet_contract.bundle import Precision
from camfleet_contract.mqtt import MqttSettings as BrokerSettings
from camfleet_hub.compat.schemas import CompatSettings
from camfleet_hub.core.logs import LogSettings
from camfleet_hub.datasets.retention import RetentionSettings

ENV_PREFIX = "CAMFLEET_HUB"


def reveal(value: SecretStr | None) -> str | None:
    """The plain value of a secret setting, for the one call that needs it (secrets print as '**********')."""
    return value.get_secret_value() if value is not None else None


class _Section(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    # coerce_numbers_to_str: an env override like PASSWORD=1234 arrives as a JSON number.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class HttpSettings(_Section):
    """Where the REST API and web UI listen, and the URL agents use to reach them."""

    host: str = "127.0.0.1"
    port: int = Field(default=8600, ge=0, le=65535)
    public_url: str | None = None

    def base_url(self) -> str:
        """URL other processes use to reach the hub (``public_url`` or derived from host/port)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


class MqttSettings(BrokerSettings):
    """The broker the hub talks to (the contract's broker settings: secret password, TLS, checked topic root);
    ``embedded`` runs an amqtt broker inside the hub on host:port.

    ``username``/``password`` are the hub's own MQTT credentials. On the embedded broker the hub user is
    ``username`` (default ``hub``) and, without a ``password``, a random one made at each start (set one when a
    separate ``camfleet-hub ingest`` process connects to it). Agents get their own accounts from the hub.
    """

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    embedded: bool = True
    port: int = Field(default=11883, ge=1, le=65535)
    allow_anonymous_loopback: bool = Field(
        default=False, description="embedded broker: let clients without credentials in from loopback (development)"
    )
    client_id: str = "camfleet-hub-ingest"
    shared_group: str = ""

    @field_validator("shared_group")
    @classmethod
    def _group_is_plain(cls, value: str) -> str:
        if any(c in value for c in "/+#"):
            raise ValueError(f"mqtt.shared_group must not contain '/', '+' or '#', got {value!r}")
        return value

    @model_validator(mode="after")
    def _embedded_is_plain(self) -> MqttSettings:
        if self.embedded and self.tls:
            raise ValueError("mqtt.tls needs an external broker (mqtt.embedded = false): the embedded one is plain")
        return self


class DbSettings(_Section):
    """SQL database; a relative SQLite path is resolved against ``data_dir``."""

    url: str = "sqlite:///hub.db"
    # Connections kept open: at least the requests served at once (classify.concurrency's decoding slots, pages,
    # workers), or each request beyond it opens and closes a connection (on SQLite that also re-applies the WAL
    # pragma, which waits on the writer).
    pool_size: int = Field(default=20, ge=1, le=500)
    max_overflow: int = Field(default=10, ge=0, le=500)


class StoreSettings(_Section):
    """Object store: a directory (``path``, relative to ``data_dir``) or any S3 server (through boto3)."""

    kind: Literal["dir", "s3"] = "dir"
    path: str = "objects"
    endpoint: str = "127.0.0.1:9000"
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    bucket: str = "camfleet"
    secure: bool = False
    region: str | None = None


class IngestSettings(_Section):
    """The MQTT frame ingest worker."""

    enabled: bool = True
    max_frame_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    batch_size: int = Field(default=64, ge=1, le=10_000)
    queue_size: int = Field(default=1024, ge=1)
    max_pixels: int = Field(default=40_000_000, ge=1)
    decode_threads: int = Field(default=0, ge=0, le=64, description="JPEG check threads; 0 = min(4, CPUs)")
    auto_register_cameras: bool = False


class ClassifySettings(_Section):
    """Bounds of one ``POST /classify``: checked from image headers before anything is decoded."""

    max_images: int = Field(default=32, ge=1, le=1024)
    max_image_bytes: int = Field(default=5 * 1024**2, ge=1024)
    max_request_bytes: int = Field(default=32 * 1024**2, ge=1024, description="all images of one request")
    max_image_pixels: int = Field(default=40_000_000, ge=1, description="width x height from the header")
    max_request_pixels: int = Field(
        default=24_000_000, ge=1, description="pixels decoded for one request, after reduced-scale JPEG decoding"
    )
    concurrency: int = Field(
        default=8,
        ge=1,
        le=256,
        description="requests decoding at once (each bounded by max_request_pixels); more get 503",
    )
    retry_after_s: int = Field(default=2, ge=1)
    batch_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=60_000,
        description="how long a model's first queued image waits for others to batch (0: requests that queue "
        "while the runners are busy still share a run)",
    )
    max_batch: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="images in one ONNX Runtime run: on a CPU small runs side by side are fastest; on a GPU "
        "raise it (e.g. 32, runners = 1, batch_wait_ms = 5)",
    )
    runners: int = Field(
        default=0,
        ge=0,
        le=64,
        description="model runs at once per model, each with cores / runners ONNX Runtime threads; "
        "0 = one per core (at most 4)",
    )
    queue_images: int = Field(
        default=256, ge=1, description="decoded images waiting for a model run, per model; more get 503"
    )
    precision: Precision = Field(
        default="fp32", description="precision signed into newly registered bundles (int8 only when it is usable)"
    )
    precision_by_classifier: dict[str, Precision] = Field(
        default_factory=dict, description='per classifier, keyed "site/classifier"; overrides precision'
    )

    def run_layout(self) -> tuple[int, int]:
        """(concurrent runs per model, ONNX Runtime threads per run) on this machine's cores."""
        cores = os.cpu_count() or 1
        runners = self.runners or min(cores, 4)
        return runners, max(1, cores // runners)


class LimitSettings(_Section):
    """Request body bounds, enforced before a body is read or spooled (``core/limits.py``)."""

    json_max_bytes: int = Field(default=1024**2, ge=1024, description="any body of a route not listed below")
    bundle_max_bytes: int = Field(default=512 * 1024**2, ge=1024, description="model bundle uploads")


class DeadLetterSettings(_Section):
    """What a rejected ingest message leaves behind: a prefix of its payload, rows capped and aged out."""

    keep_bytes: int = Field(default=4096, ge=0, le=1024**2, description="payload prefix kept in the store")
    max_rows: int = Field(default=10_000, ge=1)
    max_rows_per_topic: int = Field(default=100, ge=1)
    retention_days: float = Field(default=7.0, gt=0)


class JobSettings(_Section):
    """Training jobs: how long a claim lasts without a heartbeat before another trainer may take the job."""

    lease_s: float = Field(default=60.0, ge=1.0, le=3600.0, description="trainers heartbeat every third of it")


class SigningSettings(_Section):
    """The fleet signing key (ed25519 seed, hex); created on first start; relative to ``data_dir``."""

    key_path: str = "fleet.key"


class AuthSettings(_Section):
    """Logins and tokens. The first admin is created on first start; its password is printed once unless set."""

    enabled: bool = True
    admin_username: str = "admin"
    admin_password: SecretStr | None = None
    session_hours: float = Field(default=168.0, gt=0)
    login_attempts: int = Field(default=5, ge=1, description="failed logins allowed per user+address per window")
    login_attempts_per_user: int = Field(default=20, ge=1, description="… per username from any address")
    login_attempts_per_address: int = Field(default=20, ge=1, description="… per address for any username")
    login_window_s: float = Field(default=300.0, gt=0)
    secure_cookies: bool = False
    trusted_proxies: list[str] = Field(
        default_factory=list, description="addresses/networks whose X-Forwarded-For is believed; empty = none"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"auth.trusted_proxies: {item!r} is not an IP address or network") from None
        return value


class ImportSettings(_Section):
    """Import jobs: server folders admins may read, URL fetching bounds, and the web image search provider."""

    roots: list[str] = Field(default_factory=list, description="server folders an import may read; empty = any")
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1024)
    url_timeout_s: float = Field(default=15.0, gt=0)
    url_max_redirects: int = Field(default=3, ge=0, le=10)
    url_max_bytes: int = Field(default=20 * 1024**2, ge=1024)
    url_allow_private: bool = Field(
        default=False, description="let URL imports reach loopback, private and link-local addresses"
    )
    search_provider: str = Field(default="", description="web image search provider name; empty = none")
    search_api_key: SecretStr | None = None
    search_endpoint: str | None = None


class HubSettings(_Section):
    """All hub settings; ``data_dir`` anchors every relative path (SQLite file, object dir, key)."""

    data_dir: Path = Path("var/hub")
    http: HttpSettings = Field(default_factory=HttpSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    db: DbSettings = Field(default_factory=DbSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    signing: SigningSettings = Field(default_factory=SigningSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    imports: ImportSettings = Field(default_factory=ImportSettings)
    compat: CompatSettings = Field(default_factory=CompatSettings)  # the older tools' endpoints (compat/)
    classify: ClassifySettings = Field(default_factory=ClassifySettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    dead_letters: DeadLetterSettings = Field(default_factory=DeadLetterSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)

    def resolve(self, path: str | Path) -> Path:
        """A settings path made absolute against ``data_dir``."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.data_dir / p)

    def db_url(self) -> str:
        """The database URL with a relative SQLite file placed under ``data_dir``."""
        url = self.db.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith("sqlite:////"):
            rest = url[len(prefix) :]
            if rest and rest != ":memory:" and not rest.startswith("file:"):
                return prefix + str(self.resolve(rest).absolute())
        return url

    def store_path(self) -> Path:
        """Absolute folder of the directory object store."""
        return self.resolve(self.store.path)

    def key_path(self) -> Path:
        """Absolute path of the fleet signing key file."""
        return self.resolve(self.signing.key_path)


def load_settings(path: Path | None = None) -> HubSettings:
    """Read the hub's TOML config (if any) plus ``CAMFLEET_HUB__…`` env overrides; raises ConfigError."""
    from camfleet_contract.config import load_config

    return load_config(HubSettings, path, ENV_PREFIX)
