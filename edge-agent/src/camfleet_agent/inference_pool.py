"""Inference workers shared by every camera, taking the cameras' queued frames in turn and publishing each
camera's results in frame order."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from .events import ClassifierResult
from .frame_queue import FrameQueue, GatedFrame


class Classifiable(Protocol):
    """What the pool serves (a `CameraPipeline`): a queue of gated frames, a thread-safe classify step and an
    in-order publish step."""

    @property
    def queue(self) -> FrameQueue: ...

    def classify_safely(self, item: GatedFrame) -> list[ClassifierResult]: ...

    def publish_safely(self, item: GatedFrame, results: list[ClassifierResult]) -> None: ...


@dataclass
class _Camera:
    """A camera's frames in the pool: tickets in the order they were taken, and the next ticket to publish."""

    taken: int = 0
    published: int = 0

    @property
    def in_flight(self) -> int:
        return self.taken - self.published


class InferencePool:
    """Inference workers shared by every camera: each worker takes the next frame of the next camera in turn.

    Several frames of one camera may be classified at once (each model run on its own worker), but each camera's
    results are published one at a time in the order its frames were taken: its events stay in order and its
    upload rules' state needs no lock.
    """

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pipelines: list[Classifiable] = []
        self._cameras: dict[int, _Camera] = {}
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
            self._cameras.setdefault(id(pipeline), _Camera())
            self._cond.notify_all()

    def remove(self, pipeline: Classifiable) -> None:
        """Forget a camera; waits until no worker is classifying one of its frames."""
        with self._cond:
            self._pipelines = [p for p in self._pipelines if p is not pipeline]
            while self._busy_locked(pipeline):
                self._cond.wait(0.1)
            self._cameras.pop(id(pipeline), None)
        pipeline.queue.on_put = None

    def busy(self, pipeline: Classifiable) -> bool:
        with self._cond:
            return self._busy_locked(pipeline)

    def _busy_locked(self, pipeline: Classifiable) -> bool:
        camera = self._cameras.get(id(pipeline))
        return camera is not None and camera.in_flight > 0

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _take(self) -> tuple[Classifiable, GatedFrame, int] | None:
        """The next frame of the next camera with one waiting, round-robin, and its ticket (holding the lock)."""
        count = len(self._pipelines)
        for i in range(count):
            pipeline = self._pipelines[(self._next + i) % count]
            item = pipeline.queue.get(0)
            if item is not None:
                self._next = (self._next + i + 1) % count
                camera = self._cameras[id(pipeline)]
                camera.taken += 1
                return pipeline, item, camera.taken - 1
        return None

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                taken = self._take()
                if taken is None:
                    self._cond.wait(0.5)
                    continue
            pipeline, item, ticket = taken
            camera = self._cameras[id(pipeline)]
            results = pipeline.classify_safely(item)  # side by side with the camera's other frames
            with self._cond:
                while camera.published != ticket:  # the camera's earlier frames publish first
                    self._cond.wait()
            try:
                pipeline.publish_safely(item, results)
            finally:
                with self._cond:
                    camera.published += 1
                    self._cond.notify_all()
