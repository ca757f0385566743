"""The hub builder: creates and starts every part in order, stops them in reverse; nothing starts at import.

Start order: data dir → database (engine + migrations + first admin) → object store → embedded broker (if enabled)
→ MQTT client → ingest worker (if enabled) → HTTP (FastAPI via uvicorn, in its own thread). ``stop()`` walks back.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.container import HubCore, HubServices
from camfleet_hub.ingest.stats import IngestStats

if TYPE_CHECKING:
    from camfleet_hub.core.comms.broker import EmbeddedBroker
    from camfleet_hub.core.comms.mqtt import MqttClient
    from camfleet_hub.datasets.embeddings import Embedder
    from camfleet_hub.ingest.worker import IngestWorker

log = logging.getLogger(__name__)

HTTP_START_TIMEOUT_S = 30.0
MQTT_CONNECT_WAIT_S = 10.0
RETAINED_FILE = "broker-retained.json"


def _with_hub_credentials(s: HubSettings) -> HubSettings:
    """Settings whose hub MQTT user has a password: the configured one, or a random one for this process."""
    import secrets

    from pydantic import SecretStr

    if s.mqtt.username and s.mqtt.password:
        return s
    mqtt = s.mqtt.model_copy(
        update={
            "username": s.mqtt.username or "hub",
            "password": s.mqtt.password or SecretStr(secrets.token_urlsafe(32)),
        }
    )
    return s.model_copy(update={"mqtt": mqtt})


def _broker_access(s: HubSettings, sessions: sessionmaker[Session]) -> Any:
    """The embedded broker's access rules: the hub user, the accounts the hub issued, maybe loopback anonymous, and
    the camera owners (an agent writes only the cameras no other agent owns)."""
    from camfleet_hub.auth.mqtt_accounts import AccountVerifier
    from camfleet_hub.core.comms.broker import BrokerAccess
    from camfleet_hub.datasets.camera_owners import OwnerCache

    assert s.mqtt.username is not None and s.mqtt.password is not None
    return BrokerAccess(
        s.mqtt.username,
        s.mqtt.password.get_secret_value(),
        verify=AccountVerifier(sessions),
        allow_anonymous_loopback=s.mqtt.allow_anonymous_loopback,
        root=s.mqtt.root,
        owners=OwnerCache(sessions),
    )


class HubStartError(RuntimeError):
    """A part of the hub could not start; the message says which and why."""


class Hub:
    """Builds the hub's parts from settings, starts them in order and stops them in reverse.

    Example::

        settings = load_settings(Path("hub.toml"))
        with Hub(settings) as hub:       # start(): everything, HTTP served from a thread
            print(hub.url)
            hub.wait()                   # until stop is requested (signal handler → hub.request_stop())
    """

    def __init__(
        self,
        settings: HubSettings,
        *,
        http: bool = True,
        ingest: bool | None = None,
        broker: bool | None = None,
        publisher: bool = True,
        datasets: bool | None = None,
    ) -> None:
        self.settings = settings
        # Import jobs + embedding back-fill; an ingest-only process (no publisher) leaves them to the serving hub.
        self.with_datasets = publisher if datasets is None else datasets
        self.with_http = http
        self.with_ingest = settings.ingest.enabled if ingest is None else ingest
        self.with_broker = settings.mqtt.embedded if broker is None else broker
        self.with_publisher = publisher
        self.services: HubServices | None = None
        self.engine: Engine | None = None
        self.broker: EmbeddedBroker | None = None
        self.mqtt: MqttClient | None = None
        self.ingest: IngestWorker | None = None
        self._server: Any = None
        self._server_thread: threading.Thread | None = None
        self._stops: list[tuple[str, Callable[[], None]]] = []
        self._stop_requested = threading.Event()

    @property
    def url(self) -> str:
        """Base URL of the REST API / web UI."""
        return self.settings.http.base_url()

    # ------------------------------------------------------------------ start

    def start(self) -> HubServices:
        """Start every enabled part; on failure stop what was started and raise HubStartError."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> HubServices:
        from camfleet_contract.signing import load_or_create_key
        from camfleet_contract.topics import Topics
        from camfleet_hub.core.store.factory import make_store
        from camfleet_hub.training.announce import BundleSignatures

        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        engine, sessions = self._start_database()
        store = make_store(s.store, base_dir=s.data_dir)
        log.info("object store: %r", store)
        if self.with_broker:
            self._start_broker(sessions)
        core = HubCore(
            settings=self.settings,
            engine=engine,
            sessions=sessions,
            store=store,
            mqtt=self._start_mqtt(),
            topics=Topics(self.settings.mqtt.root),
            fleet_signing_key=load_or_create_key(s.key_path()),
            ingest_stats=IngestStats(),
            bundle_signatures=BundleSignatures(store),
        )
        self.services = services = self._services(core)
        self._stops.append(("prediction log", services.prediction_log.close))
        if services.fleet is not None:
            services.fleet.start()
            self._stops.append(("fleet runtime", services.fleet.stop))
        if self.with_ingest:
            self._start_ingest(core)
        if services.embedder is not None:
            self._start_datasets(services, services.embedder)
        if self.with_http:
            self._start_http(services)
        return services

    def _start_database(self) -> tuple[Engine, sessionmaker[Session]]:
        """Engine, migrations to head, sessions, and the first admin on an empty user table."""
        from camfleet_hub.core.db.session import make_engine, make_sessionmaker, migrate

        db = self.settings.db
        self.engine = engine = make_engine(self.settings.db_url(), pool_size=db.pool_size, max_overflow=db.max_overflow)
        self._stops.append(("database", engine.dispose))
        migrate(engine)
        sessions = make_sessionmaker(engine)
        log.info("database ready: %s", engine.url.render_as_string(hide_password=True))
        if self.settings.auth.enabled:
            self._first_admin(sessions)
        return engine, sessions

    def _start_broker(self, sessions: sessionmaker[Session]) -> None:
        """The embedded amqtt broker; the hub's own MQTT user gets a password first if it has none."""
        from camfleet_hub.core.comms.broker import EmbeddedBroker

        if self.settings.mqtt.shared_group:
            raise HubStartError(
                f"mqtt.shared_group={self.settings.mqtt.shared_group!r} needs a broker with shared subscriptions "
                "(Mosquitto, EMQX, HiveMQ); the embedded amqtt broker has none: set mqtt.embedded = false"
            )
        s = self.settings = _with_hub_credentials(self.settings)
        self.broker = EmbeddedBroker(
            s.mqtt.host, s.mqtt.port, _broker_access(s, sessions), retained_file=s.resolve(RETAINED_FILE)
        )
        self.broker.start()
        self._stops.append(("embedded broker", self.broker.stop))

    def _start_mqtt(self) -> MqttClient:
        """The publishing client (announcements, settings, commands); connected only in a publishing hub."""
        from camfleet_hub.core.comms.mqtt import MqttClient

        m = self.settings.mqtt
        self.mqtt = MqttClient.from_settings(m, f"{m.client_id}-pub-{uuid.uuid4().hex[:8]}")
        if self.with_publisher:
            self._stops.append(("mqtt client", self.mqtt.stop))
            if not self.mqtt.start(MQTT_CONNECT_WAIT_S):
                log.warning(
                    "MQTT broker %s:%s not reachable yet; announcements are queued and sent once it is", m.host, m.port
                )
        return self.mqtt

    def _start_ingest(self, core: HubCore) -> None:
        from camfleet_hub.ingest.worker import IngestWorker

        s = self.settings
        self.ingest = IngestWorker(s, core.sessions, core.store, core.ingest_stats, core.topics)
        self._stops.append(("ingest worker", self.ingest.stop))
        if not self.ingest.start(MQTT_CONNECT_WAIT_S):
            log.warning("ingest: broker %s:%s not reachable yet; retrying in the background", s.mqtt.host, s.mqtt.port)

    def _first_admin(self, sessions: sessionmaker[Session]) -> None:
        """On an empty user table create ``auth.admin_username``; a generated password is printed once, here."""
        from sqlalchemy.exc import IntegrityError

        from camfleet_hub.auth.users import first_admin
        from camfleet_hub.core.errors import ConflictError

        a = self.settings.auth
        with sessions() as session:
            try:
                password = first_admin(session, a)
            except (ConflictError, IntegrityError):  # another hub process created it at the same moment
                session.rollback()
                return
        if password is not None:
            print(f"first admin: {a.admin_username} / {password} - change it (shown only this once)", flush=True)

    def _services(self, core: HubCore) -> HubServices:
        """Every long-lived part this process runs, built once; nothing is added to the container later."""
        from camfleet_hub.core.db.session import make_engine
        from camfleet_hub.datasets.duplicates import NearIndexes
        from camfleet_hub.datasets.media import ThumbnailCache
        from camfleet_hub.serving.classify import RuntimeCache
        from camfleet_hub.serving.service import PredictionLogWriter

        near = NearIndexes()
        embedder = import_worker = fleet = None
        if self.with_datasets:
            from camfleet_hub.datasets.embeddings import Embedder
            from camfleet_hub.imports.worker import ImportWorker

            embedder = Embedder(core)
            import_worker = ImportWorker(core, embedder, near)
        if self.with_publisher:
            from camfleet_hub.fleet.service import FleetRuntime

            fleet = FleetRuntime(core)
        return HubServices.of(
            core,
            runtimes=RuntimeCache(core),
            prediction_log=PredictionLogWriter(make_engine(core.settings.db_url(), pool_size=1, max_overflow=0)),
            thumbnails=ThumbnailCache(core.store, core.settings.ingest.max_pixels),
            near_indexes=near,
            embedder=embedder,
            import_worker=import_worker,
            fleet=fleet,
        )

    def _start_datasets(self, services: HubServices, embedder: Embedder) -> None:
        """The embedding back-fill thread, the retention sweeper and import jobs (resuming those a run left)."""
        from camfleet_hub.datasets.embeddings import EmbeddingBackfill
        from camfleet_hub.datasets.retention import RetentionSweeper

        backfill = EmbeddingBackfill(services, embedder, services.near_indexes)
        backfill.start()
        self._stops.append(("embedding back-fill", backfill.stop))
        sweeper = RetentionSweeper(services.sessions, services.store, self.settings.retention)
        sweeper.start()  # per-site dataset retention, every retention.interval_s
        self._stops.append(("retention sweeper", sweeper.stop))
        if services.import_worker is not None:
            services.import_worker.start()
            self._stops.append(("import worker", services.import_worker.stop))

    def _start_http(self, services: HubServices) -> None:
        """Serve ``camfleet_hub.api.create_app(services)`` with uvicorn in a thread; wait until it listens."""
        import uvicorn

        from camfleet_hub.api import create_app
        from camfleet_hub.core.logs import RequestIdMiddleware

        s = self.settings.http
        # proxy_headers off: uvicorn would believe X-Forwarded-For from loopback; the hub reads it itself, only
        # from auth.trusted_proxies (api.deps.client_address).
        # log_config=None: uvicorn's lines go through the hub's handler (camfleet_hub.core.logs), request id included.
        config = uvicorn.Config(
            RequestIdMiddleware(create_app(services)),
            host=s.host,
            port=s.port,
            log_config=None,
            access_log=self.settings.log.access_log,
            proxy_headers=False,
        )
        server = uvicorn.Server(config)
        self._server = server
        thread = threading.Thread(target=server.run, name="http-server", daemon=True)
        thread.start()
        self._server_thread = thread
        self._stops.append(("http server", self._stop_http))
        deadline = time.monotonic() + HTTP_START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive():
                raise HubStartError(f"HTTP server could not listen on http.host={s.host!r} http.port={s.port}")
            if time.monotonic() > deadline:
                raise HubStartError(f"HTTP server did not start within {HTTP_START_TIMEOUT_S:.0f}s")
            time.sleep(0.05)
        log.info("hub HTTP API and web UI at %s", self.url)

    def _stop_http(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._server_thread is not None:
            self._server_thread.join(timeout=30)
        self._server = None
        self._server_thread = None

    # ------------------------------------------------------------------ stop

    def request_stop(self) -> None:
        """Ask ``wait()`` to return (safe from a signal handler)."""
        self._stop_requested.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until ``request_stop()`` (or ``timeout_s``); True when stop was requested."""
        return self._stop_requested.wait(timeout_s)

    def stop(self) -> None:
        """Stop every started part in reverse order; never raises."""
        while self._stops:
            name, stop = self._stops.pop()
            try:
                stop()
                log.info("stopped %s", name)
            except Exception:  # noqa: BLE001 - keep stopping the rest
                log.exception("error while stopping %s", name)

    def __enter__(self) -> Hub:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
