"""The batcher's runners: model runs of different workers overlap, yet only one batch gathers at a time, and every
request gets its own rows back."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from camfleet_hub.core.config import ClassifySettings
from camfleet_hub.serving.batcher import Batcher, BatchLimits


def _limits(runners: int, max_batch: int = 1, wait_s: float = 0.0) -> BatchLimits:
    return BatchLimits(max_batch=max_batch, wait_s=wait_s, queue_images=64, retry_after_s=1, runners=runners)


def _echo(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return batch[:, :1] * 2, batch[:, 1:]


def test_two_runners_run_two_batches_at_once() -> None:
    # Each run waits until two runs are inside the model at the same time: with one runner that never happens.
    inside = threading.Barrier(2, timeout=10)

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inside.wait()
        return _echo(batch)

    batcher = Batcher(run, _limits(runners=2))
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(batcher.submit, np.full((1, 3), float(i))) for i in range(2)]
        results = [f.result(timeout=20) for f in futures]
    assert [float(logits[0, 0]) for logits, _ in results] == [0.0, 2.0]
    assert batcher.stats.batches == 2 and batcher.stats.largest == 1
    batcher.close()


def test_one_runner_runs_one_batch_at_a_time() -> None:
    inside = threading.Barrier(2, timeout=0.5)
    overlapped: list[bool] = []

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            inside.wait()
            overlapped.append(True)
        except threading.BrokenBarrierError:
            overlapped.append(False)
            inside.reset()
        return _echo(batch)

    batcher = Batcher(run, _limits(runners=1))
    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(batcher.submit, np.ones((1, 3))) for _ in range(2)]:
            f.result(timeout=20)
    assert overlapped == [False, False]
    batcher.close()


def test_runners_share_one_gathering_batch_and_answer_each_request() -> None:
    # A long wait: the first runner gathers until max_batch; the second must not split the batch by taking a request.
    batcher = Batcher(_echo, _limits(runners=3, max_batch=6, wait_s=30.0))
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(batcher.submit, np.full((2, 3), float(i))) for i in range(3)]
        results = [f.result(timeout=20) for f in futures]
    assert (batcher.stats.batches, batcher.stats.requests, batcher.stats.largest) == (1, 3, 6)
    for i, (logits, embedding) in enumerate(results):
        assert logits.shape == (2, 1) and embedding.shape == (2, 2)
        assert np.all(logits == 2.0 * i) and np.all(embedding == float(i))
    batcher.close()


def test_run_layout_shares_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert ClassifySettings().run_layout() == (2, 1)  # default: a one-thread run per core
    assert ClassifySettings(runners=1).run_layout() == (1, 2)  # one run with every core (a GPU's layout)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert ClassifySettings().run_layout() == (4, 4)
    assert ClassifySettings(runners=32).run_layout() == (32, 1)
