"""Inference workers shared by every camera, taking the cameras' queued frames in turn."""

from __future__ import annotations

import threading
from typing import Protocol

from .frame_queue import FrameQueue, GatedFrame


class Classifiable(Protocol):
    """What the pool serves (a `CameraPipeline`): a queue of gated frames and a way to process one."""

    @property
    def queue(self) -> FrameQueue: ...

    def process_safely(self, item: GatedFrame) -> None: ...


class InferencePool:
    """Inference workers shared by every camera: each worker takes the next frame of the next camera in turn.

    A camera is classified by one worker at a time (its events stay in order and its upload state needs no
    lock); with several workers, several cameras are classified at once.
    """

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pipelines: list[Classifiable] = []
        self._busy: set[int] = set()
        self._next = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._work, name=f"infer-{i}", daemon=True) for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def add(self, pipeline: Classifiable) -> None:
        pipeline.queue.on_put = self._wake
        with self._cond:
            self._pipelines.append(pipeline)
            self._cond.notify_all()

    def remove(self, pipeline: Classifiable) -> None:
        """Forget a camera; waits until no worker is classifying one of its frames."""
        with self._cond:
            self._pipelines = [p for p in self._pipelines if p is not pipeline]
            while id(pipeline) in self._busy:
                self._cond.wait(0.1)
        pipeline.queue.on_put = None

    def busy(self, pipeline: Classifiable) -> bool:
        with self._cond:
            return id(pipeline) in self._busy

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _take(self) -> tuple[Classifiable, GatedFrame] | None:
        """The next frame of the next idle camera with one waiting, round-robin (holding the lock)."""
        count = len(self._pipelines)
        for i in range(count):
            pipeline = self._pipelines[(self._next + i) % count]
            if id(pipeline) in self._busy:
                continue
            item = pipeline.queue.get(0)
            if item is not None:
                self._next = (self._next + i + 1) % count
                self._busy.add(id(pipeline))
                return pipeline, item
        return None

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                taken = self._take()
                if taken is None:
                    self._cond.wait(0.5)
                    continue
            pipeline, item = taken
            try:
                pipeline.process_safely(item)
            finally:
                with self._cond:
                    self._busy.discard(id(pipeline))
                    self._cond.notify_all()
