"""The prediction log's group commit: every row of every concurrent request committed before it returns, on
SQLite and PostgreSQL; a request whose rows cannot be written fails alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from camfleet_hub.core.errors import UnavailableError
from camfleet_hub.datasets.models import Site
from camfleet_hub.serving.models import PredictionClassList, PredictionLog
from camfleet_hub.serving.ranking import SCORE_DTYPE
from camfleet_hub.serving.service import LogContext, PredictionLogWriter, Scored

THREADS = 16
REQUESTS_EACH = 10


def _scored(label: str, classes: tuple[str, ...] | None = None, scores: list[float] | None = None) -> Scored:
    classes = classes or (label, "other")
    values = np.asarray(scores or [0.9, 0.1], SCORE_DTYPE)
    return Scored(label, 0.9, classes, values, False, 0.1, 0.5, None, np.zeros(4, np.float32))


def _site(engine: Engine) -> int:
    with sessionmaker(engine)() as s:
        site = Site(name="plaza")
        s.add(site)
        s.commit()
        return site.id


def test_concurrent_requests_are_all_committed_before_they_return(engine: Engine) -> None:
    sessions = sessionmaker(engine)
    site_id = _site(engine)
    writer = PredictionLogWriter(engine)
    seen_on_return: list[bool] = []
    lock = threading.Lock()

    def client(t: int) -> None:
        for r in range(REQUESTS_EACH):
            name = f"t{t}-r{r}.jpg"
            ctx = LogContext(site_id, "clf", 1, 3, f"user{t}", "classify")
            writer.write(ctx, [name, name + "-2"], [_scored("a"), _scored("b")])
            with sessions() as s:  # committed: another session sees it the moment write returns
                found = s.scalar(select(func.count()).where(PredictionLog.image_name == name))
            with lock:
                seen_on_return.append(found == 1)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(seen_on_return) == THREADS * REQUESTS_EACH and all(seen_on_return)
    with sessions() as s:
        names = set(s.scalars(select(PredictionLog.image_name)))
        assert s.scalar(select(func.count()).select_from(PredictionLog)) == THREADS * REQUESTS_EACH * 2
    assert names == {f"t{t}-r{r}.jpg{x}" for t in range(THREADS) for r in range(REQUESTS_EACH) for x in ("", "-2")}


def test_a_request_with_a_bad_row_fails_alone(engine: Engine) -> None:
    sessions = sessionmaker(engine)
    site_id = _site(engine)
    writer = PredictionLogWriter(engine)
    errors: list[BaseException] = []
    start = threading.Barrier(9)

    def client(i: int) -> None:
        # Request 0 names a site that does not exist: the foreign key refuses its row.
        ctx = LogContext(site_id if i else 999_999, "clf", None, 1, "u", "classify")
        start.wait()
        try:
            writer.write(ctx, [f"img{i}"], [_scored("a")])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(9)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(errors) == 1 and isinstance(errors[0], IntegrityError)
    with sessions() as s:
        assert set(s.scalars(select(PredictionLog.image_name))) == {f"img{i}" for i in range(1, 9)}
    # The writer keeps serving after a failure.
    writer.write(LogContext(site_id, "clf", None, 1, "u", "classify"), ["after"], [_scored("a")])
    with sessions() as s:
        assert s.scalar(select(func.count()).where(PredictionLog.image_name == "after")) == 1


def test_nothing_to_log_writes_nothing(engine: Engine) -> None:
    writer = PredictionLogWriter(engine)
    writer.write(LogContext(1, "clf", None, 1, "u", "classify"), [], [])
    with sessionmaker(engine)() as s:
        assert s.scalar(select(func.count()).select_from(PredictionLog)) == 0


def test_close_refuses_new_rows(engine: Engine) -> None:
    writer = PredictionLogWriter(engine)
    writer.close()
    with pytest.raises(UnavailableError):
        writer.write(LogContext(1, "clf", None, 1, "u", "classify"), ["late"], [_scored("a")])


def test_rows_keep_packed_scores_and_share_one_list_of_groups(engine: Engine) -> None:
    """Rows read back every probability, most likely first; the group names are stored once, even by two hubs."""
    site_id = _site(engine)
    groups = ("shirt", "hat", "shoe")
    ctx = LogContext(site_id, "clf", 1, 3, "u", "classify")
    for writer in (PredictionLogWriter(engine), PredictionLogWriter(engine)):  # a second hub: its own cache
        writer.write(ctx, ["a.jpg", "b.jpg"], [_scored("hat", groups, [0.2, 0.7, 0.1])] * 2)
        writer.close()
    with sessionmaker(engine)() as s:
        rows = s.scalars(select(PredictionLog)).all()
        assert [r.probabilities for r in rows] == [{"hat": 0.7, "shirt": 0.2, "shoe": 0.1}] * 4
        assert list(rows[0].probabilities) == ["hat", "shirt", "shoe"]
        assert len(rows[0].scores) == 3 * SCORE_DTYPE.itemsize
        assert s.scalars(select(PredictionClassList.classes)).all() == [list(groups)]
