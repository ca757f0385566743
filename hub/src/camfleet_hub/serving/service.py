"""Serving: classify decoded images with every probability, and log each REST prediction.

``score_images`` runs the runtime's model once and keeps the full probability vector (the runtime's own
``classify`` keeps its top-k), with the same anomaly score as hub and agent compute it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from camfleet_contract.images import preprocess_batch
from camfleet_contract.runtime import ClassifierRuntime, softmax
from camfleet_hub.core.errors import UnavailableError
from camfleet_hub.serving.models import PredictionClassList, PredictionLog
from camfleet_hub.serving.ranking import SCORE_DTYPE, ranked, rounded


@dataclass(frozen=True)
class Scored:
    """One image under one model: the top label, every group's probability, the anomaly."""

    label: str
    probability: float
    classes: Sequence[str]  # the model's groups, in output order
    scores: np.ndarray  # SCORE_DTYPE probabilities in that order: what the log keeps
    anomaly: bool
    anomaly_score: float
    threshold: float
    distance: float | None
    embedding: np.ndarray

    @property
    def probabilities(self) -> dict[str, float]:
        """Every group's probability, most likely first."""
        return ranked(self.classes, self.scores)

    def top(self, k: int) -> dict[str, float]:
        """The `k` most likely groups (an answer's top-k need not rank all 1,000 groups of a model)."""
        return ranked(self.classes, self.scores, k)


def score_images(runtime: ClassifierRuntime, images: Sequence[np.ndarray]) -> list[Scored]:
    """Every probability of every image, in one batch."""
    if not images:
        return []
    logits, embedding = runtime.run(preprocess_batch(list(images), runtime.manifest.preprocessing))
    return score_outputs(runtime, logits, embedding)


def score_outputs(runtime: ClassifierRuntime, logits: np.ndarray, embedding: np.ndarray) -> list[Scored]:
    """``Scored`` rows from raw model outputs (the batcher runs the model for several requests at once); the
    anomaly score is the runtime's own, so the hub flags exactly what an agent running the bundle flags."""
    cal = runtime.manifest.anomaly
    probs = softmax(logits, cal.temperature).astype(SCORE_DTYPE)
    found = runtime.assess(logits, embedding)
    classes = runtime.classes
    out = []
    for i, row in enumerate(probs):
        top = int(np.argmax(row))  # the first of equals, as ``ranked`` orders them
        (p,) = rounded(row[top : top + 1])
        dist = None if found.distances is None else float(found.distances[i])
        flag, score = bool(found.flags[i]), float(found.scores[i])
        out.append(Scored(classes[top], p, classes, row, flag, score, cal.threshold, dist, embedding[i]))
    return out


@dataclass(frozen=True)
class LogContext:
    """Who asked, through which route, with which model."""

    site_id: int
    classifier: str
    model_id: int | None
    model_version: int
    caller: str
    route: str


def log_rows(ctx: LogContext, names: Sequence[str], results: Sequence[Scored]) -> list[dict[str, object]]:
    """One plain row per image (a bulk INSERT of plain rows: the ORM unit of work, an object per row then a flush,
    was ~7% of the hub's busy samples under 16 classify clients, py-spy)."""
    return [
        {
            "site_id": ctx.site_id,
            "classifier": ctx.classifier,
            "model_id": ctx.model_id,
            "model_version": ctx.model_version,
            "caller": ctx.caller[:64],
            "route": ctx.route,
            "image_name": name[:512],
            "label": r.label,
            "probability": r.probability,
            "anomaly": r.anomaly,
            "anomaly_score": r.anomaly_score,
            "scores": np.ascontiguousarray(r.scores, dtype=SCORE_DTYPE).tobytes(),
        }
        for name, r in zip(names, results, strict=True)
    ]


def class_list_id(session: Session, classes: Sequence[str]) -> int:
    """The id of this list of groups, stored on its first use (another hub may store it at the same moment)."""
    digest = hashlib.sha256(json.dumps(list(classes), separators=(",", ":")).encode()).hexdigest()
    query = select(PredictionClassList.id).where(PredictionClassList.digest == digest)
    found = session.scalar(query)
    if found is not None:
        return found
    try:
        with session.begin_nested():
            row = PredictionClassList(digest=digest, classes=list(classes))
            session.add(row)
        return row.id
    except IntegrityError:
        return session.scalars(query).one()


@dataclass
class _Pending:
    rows: list[dict[str, object]]
    classes: tuple[str, ...]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class PredictionLogWriter:
    """Group commit for the prediction log: every request's rows are committed before it is answered, but the
    requests that wait together share one INSERT and one commit.

    One commit per request made 16 concurrent clients queue on the database's write lock (on SQLite ~20% of the
    hub's busy samples went to the log, py-spy); one writer thread takes whatever has queued while it was
    committing, so the number of transactions follows the database's speed, not the request rate. A failing group
    is retried request by request, so one bad row fails only its own request. The writer has its own engine (one
    connection): requests waiting for their rows may hold every connection of the shared pool.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine)
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._class_lists: dict[tuple[str, ...], int] = {}  # writer thread only

    def write(self, ctx: LogContext, names: Sequence[str], results: Sequence[Scored]) -> None:
        """Log one row per image; returns once they are committed (raises what the commit raised)."""
        if not results:
            return
        pending = _Pending(log_rows(ctx, names, results), tuple(results[0].classes))
        with self._cond:
            if self._closed:
                raise UnavailableError("the hub is stopping; the prediction was not logged")
            self._queue.append(pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="prediction-log", daemon=True)
                self._thread.start()
            self._cond.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error

    def close(self) -> None:
        """Write what is queued, then release the engine's connection."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        self._engine.dispose()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                group, self._queue = self._queue, []
            try:
                self._commit(group)
            except Exception:  # noqa: BLE001 - retried one request at a time below
                for pending in group:
                    try:
                        self._commit([pending])
                    except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                        pending.error = exc
            for pending in group:
                pending.done.set()

    def _commit(self, group: list[_Pending]) -> None:
        rows = [{**row, "class_list_id": self._class_list_id(p.classes)} for p in group for row in p.rows]
        with self._sessions() as session:
            session.execute(insert(PredictionLog), rows)
            session.commit()

    def _class_list_id(self, classes: tuple[str, ...]) -> int:
        known = self._class_lists.get(classes)
        if known is None:  # committed on its own before it is remembered: a failed group must not take it along
            with self._sessions() as session:
                known = class_list_id(session, classes)
                session.commit()
            self._class_lists[classes] = known
        return known
