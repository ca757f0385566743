"""The MQTT frame ingest worker: at-least-once, idempotent, acknowledging only what is committed.

paho's network thread only puts messages into a bounded queue (back-pressure: when it is full the network thread
waits and the broker stops sending beyond its in-flight window). One worker thread drains the queue in batches:
validate → store objects (concurrently, while the rows are inserted) → one DB transaction → commit once every object
is stored → acknowledge every message of the batch in order. A crash
anywhere before the acknowledgement means the broker redelivers (persistent session, ``clean_session=False``), and
the unique keys (frame_id, sha256) make the redelivery a no-op. Rejected messages become dead letters (payload kept
in the store under ``dead/``) and are acknowledged too, so a poison message never blocks the queue.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker

from camfleet_contract.topics import Topics
from camfleet_hub.core.comms.mqtt import MqttClient, Received
from camfleet_hub.core.config import HubSettings
from camfleet_hub.core.store.base import DEAD_PREFIX, ObjectStore
from camfleet_hub.datasets import camera_owners
from camfleet_hub.fleet.events import foreign_agent_events, site_ids, store_events, validate_event
from camfleet_hub.ingest import persist
from camfleet_hub.ingest.batch import (
    EVENT,
    FRAME,
    STATUS,
    Batch,
    Item,
    count_batch,
    infrastructure_error,
    keep_dead_payload,
)
from camfleet_hub.ingest.stats import IngestStats
from camfleet_hub.ingest.validate import Rejection, ValidFrame, validate_frame, validate_status

log = logging.getLogger(__name__)

BATCH_WAIT_S = 0.02
POLL_S = 0.2
PENDING_STATUS_RETRY_S = 2.0
MAX_PENDING_STATUSES = 10_000
RETRY_ATTEMPTS = 3
RETRY_MAX_SLEEP_S = 10.0
# Object PUTs are I/O-bound (a network round trip each on S3; a write + fsync on a directory): this many run at
# once, whatever the number of CPUs; each worker holds one of the S3 client's pooled connections.
STORE_THREADS = 8


class IngestWorker:
    """Subscribes to frames and agent statuses and writes them to the store and the database.

    Example::

        worker = IngestWorker(settings, sessions, store, IngestStats())
        worker.start()   # connects in the background; returns at once
        ...
        worker.stop()
    """

    def __init__(
        self,
        settings: HubSettings,
        sessions: sessionmaker[Session],
        store: ObjectStore,
        stats: IngestStats,
        topics: Topics | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.stats = stats
        self.topics = topics or Topics(settings.mqtt.root)
        ingest = settings.ingest
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=ingest.queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._store_pool: ThreadPoolExecutor | None = None
        self._pending_status: dict[tuple[str, str], Item] = {}
        self._pending_checked = 0.0
        self.batches = 0
        mqtt = settings.mqtt
        self.client = MqttClient.from_settings(mqtt, mqtt.client_id, clean_session=False, manual_ack=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self, wait_s: float | None = None) -> bool:
        """Start the worker thread, subscribe and connect; optionally wait for the broker's CONNACK."""
        if self._thread is None:
            self._stop.clear()
            threads = self.settings.ingest.decode_threads or min(4, os.cpu_count() or 1)
            if threads > 1:
                self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest-decode")
            self._store_pool = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="ingest-store")
            self._thread = threading.Thread(target=self._run, name="ingest-worker", daemon=True)
            self._thread.start()
            group = self.settings.mqtt.shared_group or None
            self.client.subscribe(self.topics.frames_subscription(group), self._enqueue_frame, qos=1)
            self.client.subscribe(self.topics.statuses_subscription(), self._enqueue_status, qos=1)
            events = self.topics.events_subscription()  # event history (fleet domain), split like frames
            self.client.subscribe(f"$share/{group}/{events}" if group else events, self._enqueue_event, qos=1)
        return self.client.start(wait_s)

    def stop(self) -> None:
        """Finish the batch in progress (committed and acknowledged), then disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        for pool in (self._pool, self._store_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._store_pool = None
        self.client.stop()

    @property
    def connected(self) -> bool:
        """Whether the ingest MQTT session is up."""
        return self.client.connected

    # ------------------------------------------------------------------ network thread side

    def _put(self, item: Item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _enqueue_frame(self, msg: Received) -> None:
        self._put(Item(FRAME, msg))

    def _enqueue_status(self, msg: Received) -> None:
        self._put(Item(STATUS, msg))

    def _enqueue_event(self, msg: Received) -> None:
        self._put(Item(EVENT, msg))

    # ------------------------------------------------------------------ worker thread

    def _next_batch(self) -> list[Item]:
        """Up to ``batch_size`` messages: whatever is queued now, plus what arrives within ~20 ms."""
        try:
            first = self._queue.get(timeout=POLL_S)
        except queue.Empty:
            return []
        items = [first]
        limit = self.settings.ingest.batch_size
        deadline = time.monotonic() + BATCH_WAIT_S
        while len(items) < limit:
            try:
                items.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                items.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return items

    def _run(self) -> None:
        while not self._stop.is_set():
            items = self._next_batch()
            if items:
                self._handle_with_retry(items)
            if self._pending_status and time.monotonic() - self._pending_checked > PENDING_STATUS_RETRY_S:
                self._retry_pending_statuses()

    def _handle_with_retry(self, items: list[Item]) -> None:
        """Process a batch; on a database/store error retry, then split it so one bad message cannot block all."""
        attempt = 0
        while True:
            try:
                self._handle(items)
                return
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                attempt += 1
                log.exception("ingest batch of %d failed (attempt %d): %s", len(items), attempt, exc)
                if self._stop.is_set():
                    return  # unacknowledged: the broker redelivers after reconnect
                if attempt >= RETRY_ATTEMPTS and len(items) > 1:
                    for item in items:
                        self._handle_with_retry([item])
                    return
                if attempt >= RETRY_ATTEMPTS and len(items) == 1:
                    if self._give_up(items[0], exc):
                        return
                if infrastructure_error(exc):  # waiting outlasts an outage; a message's own fault it cannot fix,
                    time.sleep(min(RETRY_MAX_SLEEP_S, 0.5 * 2**attempt))  # and would stall every site's ingest

    def _give_up(self, item: Item, exc: Exception) -> bool:
        """Dead-letter a single message that keeps failing; False if even that fails (the DB is down: keep trying)."""
        if infrastructure_error(exc):
            return False  # a full disk, an unreachable database or store: not the message's fault, never drop it
        item.rejection = Rejection("internal_error", f"{type(exc).__name__}: {exc}")
        item.frame = item.status = item.event = None
        try:
            self._finish(Batch([item]), [])
        except Exception:  # noqa: BLE001
            log.exception("ingest: could not dead-letter a failing message on %s", item.msg.topic)
            return False
        return True

    def _validate(self, item: Item) -> None:
        """Database-free checks of one message (runs on the decode pool: PIL releases the GIL while decoding)."""
        ingest = self.settings.ingest
        item.frame = item.status = item.event = item.rejection = None
        try:
            if item.kind == EVENT:
                item.event = validate_event(self.topics, item.msg.topic, item.msg.payload)
            elif item.kind == FRAME:
                item.frame = validate_frame(
                    self.topics, item.msg.topic, item.msg.payload, ingest.max_frame_bytes, ingest.max_pixels
                )
            else:
                item.status = validate_status(self.topics, item.msg.topic, item.msg.payload)
        except Rejection as rej:
            item.rejection = rej

    def _handle(self, items: list[Item]) -> None:
        if self._pool is not None and len(items) > 1:
            list(self._pool.map(self._validate, items))
        else:
            for item in items:
                self._validate(item)
        self._finish(Batch(items), [i for i in items if i.frame is not None])

    def _finish(self, batch: Batch, framed: list[Item]) -> None:
        """Resolve names, store objects, commit one transaction, then count and acknowledge."""
        outcome = persist.FrameOutcome([], [], [])
        stored: list[Future[str]] = []
        with self.sessions() as session:
            # Statuses first: a camera an agent announces in this batch may already send frames in it.
            for item in batch.items:
                if item.kind == STATUS and item.status is not None and item.rejection is None:
                    if not persist.apply_status(session, item.status):
                        self._remember_status(item)
            if framed:
                pairs = {(i.frame.topic.site, i.frame.topic.camera or "") for i in framed if i.frame}
                register = pairs if self.settings.ingest.auto_register_cameras else None
                index = persist.resolve_names(session, pairs, register)
                accepted: list[ValidFrame] = []
                seen: set[str] = set()
                for item in framed:
                    frame = item.frame
                    assert frame is not None
                    site, camera = frame.topic.site, frame.topic.camera or ""
                    if site not in index.sites:
                        item.rejection, item.frame = Rejection("unknown_site", f"site {site!r} is not registered"), None
                    elif (site, camera) not in index.cameras:
                        item.rejection, item.frame = (
                            Rejection("unknown_camera", f"camera {camera!r} of site {site!r} is not registered"),
                            None,
                        )
                    elif why := camera_owners.mismatch(camera, index.owners.get((site, camera)), frame.header.agent):
                        item.rejection, item.frame = Rejection("bad_header", why), None
                    elif frame.header.frame_id not in seen:
                        seen.add(frame.header.frame_id)
                        accepted.append(frame)
                stored = self._store_objects(accepted)  # the PUTs run while the rows are inserted
                outcome = persist.write_frames(session, accepted, index)
                conflicts = set(outcome.conflicts)
                for item in framed:
                    if item.frame is not None and item.frame.header.frame_id in conflicts:
                        fid = item.frame.header.frame_id
                        item.rejection = Rejection(
                            "frame_id_conflict", f"frame_id {fid!r} was already stored with different image bytes"
                        )
                        conflicts.discard(fid)
            self._store_events(session, batch)
            dead_topics = set()
            for item in batch.items:
                if item.rejection is not None:
                    dead_topics.add(item.msg.topic)
                    sha, detail = keep_dead_payload(
                        self.store, self.settings.dead_letters.keep_bytes, item.msg.payload, item.rejection.detail
                    )
                    persist.add_dead_letter(
                        session, item.msg.topic, item.rejection.reason, detail, len(item.msg.payload), sha
                    )
            for future in stored:  # never commit a row whose object is not stored yet; a failed PUT fails the batch
                future.result()
            started = time.perf_counter()
            session.commit()
            self.stats.observe_commit(time.perf_counter() - started, self._queue.qsize())
        if dead_topics:
            self._prune_dead_letters(dead_topics)
        count_batch(self.stats, batch, outcome)
        for item in batch.items:
            self.client.ack(item.msg.mid, item.msg.qos)
        self.batches += 1

    def _store_events(self, session: Session, batch: Batch) -> None:
        """Events of known sites, from their camera's owner (if it has one), go to the event history in this batch's
        transaction; others are rejected."""
        evented = [i for i in batch.items if i.event is not None and i.rejection is None]
        if not evented:
            return
        known = site_ids(session, {i.event.site for i in evented if i.event})
        foreign = foreign_agent_events(session, [i.event for i in evented if i.event is not None])
        for item, why in zip(evented, foreign, strict=True):
            if item.event is not None and item.event.site not in known:
                item.rejection = Rejection("unknown_site", f"site {item.event.site!r} is not registered")
                item.event = None
            elif why is not None:
                item.rejection, item.event = Rejection("bad_event", why), None
        fresh = [i.event for i in evented if i.event is not None]
        batch.events_new = store_events(session, fresh, known)
        batch.events_seen = len(fresh)

    def _prune_dead_letters(self, topics: set[str]) -> None:
        """Apply the dead-letter caps after a commit; a failure here only delays the pruning to the next one."""
        try:
            with self.sessions() as session:
                unused = persist.prune_dead_letters(session, topics, self.settings.dead_letters)
                session.commit()
            for sha in unused:
                self.store.delete(sha, DEAD_PREFIX)
        except Exception:  # noqa: BLE001 - the messages are committed; never fail the batch for this
            log.exception("ingest: pruning dead letters failed")

    def _store_objects(self, frames: list[ValidFrame]) -> list[Future[str]]:
        """Start writing the batch's distinct JPEGs on the store pool; the caller waits for them before committing.

        Idempotent: a batch redelivered after a crash writes the same objects again. Without a pool (the worker not
        started, as in some tests) the writes happen here, one after another.
        """
        distinct = {frame.header.sha256: frame.jpeg for frame in frames}
        if self._store_pool is None:
            done: list[Future[str]] = []
            for jpeg in distinct.values():
                future: Future[str] = Future()
                future.set_result(self.store.put(jpeg))
                done.append(future)
            return done
        return [self._store_pool.submit(self.store.put, jpeg) for jpeg in distinct.values()]

    def _remember_status(self, item: Item) -> None:
        """Keep the latest status of an agent whose site does not exist yet; applied once the site appears."""
        assert item.status is not None
        key = (item.status.site, item.status.agent)
        if key in self._pending_status or len(self._pending_status) < MAX_PENDING_STATUSES:
            self._pending_status[key] = item
        log.info("ingest: status of agent %r for unknown site %r kept until the site exists", key[1], key[0])

    def _retry_pending_statuses(self) -> None:
        self._pending_checked = time.monotonic()
        try:
            with self.sessions() as session:
                done = [
                    k
                    for k, item in self._pending_status.items()
                    if item.status and persist.apply_status(session, item.status)
                ]
                session.commit()
        except Exception:  # noqa: BLE001
            log.exception("ingest: applying pending agent statuses failed")
            return
        for key in done:
            del self._pending_status[key]
