"""Agent benchmarks on the shared plaza clip, each against a baseline measured in the same run:

1. pipeline ÷ raw ONNX Runtime, gate off: frames/s classified by the real agent (`python -m camfleet_agent run`:
   decode → preprocess → ORT → event published QoS 1 to Mosquitto, counted by a subscriber) ÷ `session.run` at
   batch 1 on already preprocessed frames (target >= 0.8). Interleaved so load from other processes hits both
   alike: raw windows run while the agent is SIGSTOPped, agent windows between them; the ratio is the median
   of the per-pair ratios;
2. the motion gate, on and off, per camera (in-process pipeline, every frame of the clip, events to memory):
   share of captured frames classified, frames/s and CPU per camera, on the busy plaza clip and on a "quiet"
   clip (the plaza's first frame held for as long again, then the clip);
3. INT8 ÷ FP32 speed at batch 1 (the FP32 model quantised as the trainer does, calibrated on clip frames), both
   sessions with the runtime's options (`runtime.session_options`), calls alternated, median latency each.

The model is the default EfficientNet-Lite0 bundle (ImageNet head), exported by the trainer.
    python bench/agent.py [--seconds 20]
    python bench/agent.py --smoke          # a few seconds on the tests' carried clip: does every part still run
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLIP, REPO, mosquitto, threads_rate  # noqa: E402

from camfleet_agent.capture import open_source  # noqa: E402
from camfleet_agent.config import AgentSettings, CameraSettings  # noqa: E402
from camfleet_agent.events import Identity  # noqa: E402
from camfleet_agent.pipeline import CameraPipeline  # noqa: E402
from camfleet_contract.images import preprocess  # noqa: E402
from camfleet_contract.runtime import ClassifierRuntime, session_options  # noqa: E402
from camfleet_contract.topics import Topics  # noqa: E402

SITE, AGENT, CAMERA = "bench", "bench-agent", "plaza"
SMOKE_CLIP = REPO / "tests" / "data" / "video" / "plaza.avi"
RAW_WINDOW_S = 1.0  # raw ORT, agent stopped
AGENT_WINDOW_S = 1.5  # agent counted, after SETTLE_S to refill its queue
SETTLE_S = 0.3


def read_frames(clip: Path, limit: int) -> Iterator[np.ndarray]:
    """RGB frames of `clip`, looping, `limit` in all."""
    n = 0
    while n < limit:
        cap = cv2.VideoCapture(str(clip))
        got = 0
        while n < limit:
            ok, bgr = cap.read()
            if not ok:
                break
            got += 1
            n += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        cap.release()
        if got == 0:
            raise SystemExit(f"cannot read any frame of {clip}")


def raw_window(rt: ClassifierRuntime, batches: list[np.ndarray], seconds: float, streams: int = 1) -> float:
    """`rt.run` calls per second at batch 1 on already preprocessed frames, from `streams` threads at once: the
    ceiling for the pipeline (one stream: the issue's baseline; the agent's layout: one per inference worker)."""

    def step(stream: int, call: int) -> int:
        rt.run(batches[(call * streams + stream) % len(batches)])
        return 1

    return threads_rate(step, streams, seconds)


@dataclass
class _Events:
    """Arrival times and reported latencies of the agent's events, as the subscriber receives them."""

    times: list[float]
    latencies: list[float]


@contextlib.contextmanager
def running_agent(bundle: Path, version: str, clip: Path, tmp: Path) -> Iterator[tuple[subprocess.Popen, _Events]]:
    """The agent process on `clip`, gate off, as fast as it goes, warmed up (20 events seen)."""
    data = tmp / "agent"
    clf_dir = data / "models" / "imagenet"
    clf_dir.mkdir(parents=True)
    shutil.copytree(bundle, clf_dir / version)
    (clf_dir / "active.json").write_text(json.dumps({"version": version, "previous": None}))
    signer = json.loads((bundle / "manifest.json").read_text())["signer"]
    with mosquitto() as port:
        cfg = tmp / "agent.toml"
        cfg.write_text(
            f'agent = "{AGENT}"\nsite = "{SITE}"\nhub_url = "http://127.0.0.1:9"\ndata_dir = "{data}"\n'
            f'fleet_public_key = "{signer}"\n[mqtt]\nport = {port}\n[health]\nenabled = false\n'
            f'[[cameras]]\nname = "{CAMERA}"\nsource = "{clip}"\nfps = 1000\nupload_interval_s = 0\n'
            "[cameras.gate]\nenabled = false\n"
        )
        events = _Events([], [])
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-agent-sub")

        def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
            events.times.append(time.perf_counter())
            events.latencies.append(json.loads(msg.payload)["latency_ms"])

        sub.on_message = on_message
        sub.connect("127.0.0.1", port)
        sub.subscribe(f"camfleet/v1/{SITE}/{CAMERA}/event", qos=1)
        sub.loop_start()
        log = open(tmp / "agent.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "camfleet_agent", "run", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 120
            while len(events.times) < 20 and time.monotonic() < deadline:  # warm-up: model loaded, caches hot
                time.sleep(0.2)
            if len(events.times) < 20:
                raise SystemExit(
                    f"the agent published no events; see {tmp / 'agent.log'}:\n"
                    + (tmp / "agent.log").read_text()[-3000:]
                )
            yield proc, events
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            proc.wait(timeout=30)
            sub.loop_stop()


@dataclass(frozen=True)
class RatioRun:
    raw: list[float]  # frames/s per raw window
    agent: list[float]  # frames/s per agent window
    latencies: list[float]  # event latencies (ms) in the agent windows

    @property
    def ratio(self) -> float:
        return statistics.median(a / r for a, r in zip(self.agent, self.raw, strict=True))

    def info(self) -> dict[str, object]:
        lat = sorted(self.latencies) or [0.0]
        return {
            "pairs": len(self.raw),
            "p50_latency_ms": round(lat[len(lat) // 2], 1),
            "p95_latency_ms": round(lat[int(len(lat) * 0.95)], 1),
        }


def batches_of(rt: ClassifierRuntime, clip: Path) -> list[np.ndarray]:
    return [preprocess(f, rt.manifest.preprocessing)[None] for f in read_frames(clip, 32)]


def pipeline_ratio(rt: ClassifierRuntime, bundle: Path, clip: Path, seconds: float, tmp: Path) -> RatioRun:
    """Raw windows (agent stopped) and agent windows alternated until the agent has run `seconds`."""
    batches = batches_of(rt, clip)
    for x in batches[:4]:
        rt.run(x)  # warm-up
    run = RatioRun([], [], [])
    with running_agent(bundle, rt.version, clip, tmp) as (proc, events):
        for _ in range(max(1, round(seconds / AGENT_WINDOW_S))):
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(0.1)
            run.raw.append(raw_window(rt, batches, RAW_WINDOW_S))
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(SETTLE_S)
            first, start = len(events.times), time.perf_counter()
            time.sleep(AGENT_WINDOW_S)
            last = len(events.times)
            run.agent.append((last - first) / (time.perf_counter() - start))
            run.latencies.extend(events.latencies[first:last])
    return run


class _Sink:
    """Publisher stand-in: counts events (the gate bench measures capture + gate + inference, not MQTT)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        with self._lock:
            self.count += 1
        return True


@dataclass(frozen=True)
class GateRun:
    clip: str
    gate: bool
    captured: int
    classified: int
    seconds: float
    cpu_s: float

    @property
    def share(self) -> float:
        return self.classified / self.captured if self.captured else 0.0

    def row(self) -> str:
        fps = self.captured / self.seconds
        cpu_ms = 1000 * self.cpu_s / self.captured
        return (
            f"| {self.clip} | {'on' if self.gate else 'off'} | {self.captured} | {self.classified} | "
            f"{self.share:.2f} | {fps:.1f} | {cpu_ms:.1f} ms | {100 * self.cpu_s / self.seconds:.0f} % |"
        )


def gate_run(rt: ClassifierRuntime, clip: Path, name: str, gate: bool) -> GateRun:
    """One camera replaying every frame of `clip` once, as fast as the pipeline takes them."""
    camera = CameraSettings.model_validate(
        {
            "name": CAMERA,
            "source": str(clip),
            "fps": 120,
            "upload_interval_s": 0,
            "loop": False,
            "gate": {"enabled": gate, "keepalive_s": 60},
        }
    )
    pipeline = CameraPipeline(
        camera,
        open_source(str(clip), 1000, loop=False),
        lambda: {"imagenet": rt},
        _Sink(),
        Identity(SITE, AGENT, Topics()),
        queue_size=4,
    )
    cpu0, t0 = time.process_time(), time.perf_counter()
    pipeline.start()
    pipeline.join(timeout=3600)
    pipeline.stop()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    snap = pipeline.stats.snapshot()
    return GateRun(name, gate, snap.captured, snap.classified, seconds, cpu)


def quiet_clip(clip: Path, out: Path, limit: int) -> Path:
    """The clip's first frame held for as many frames as the clip has (up to `limit`), then the clip: MJPG .avi."""
    frames = list(read_frames(clip, limit))
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    for rgb in [frames[0]] * len(frames) + frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return out


def _run_session(sess: object, name: str, x: np.ndarray) -> object:
    return sess.run(None, {name: x})  # type: ignore[attr-defined]


def int8_speedup(bundle: Path, clip: Path, seconds: float, calibration: int, tmp: Path) -> tuple[float, float]:
    """Batch-1 frames/s of the FP32 model and of its INT8 quantisation (as the trainer makes it): calls alternate
    between the two sessions, so load from other processes hits both alike; rate = 1 / median call time."""
    import onnxruntime as ort

    from camfleet_trainer.quantize import quantize_int8

    rt = ClassifierRuntime(bundle)
    inputs = [preprocess(f, rt.manifest.preprocessing)[None] for f in read_frames(clip, max(calibration, 16))]
    int8 = tmp / "model.int8.onnx"
    quantize_int8(bundle / "model.onnx", int8, np.concatenate(inputs[:calibration]))
    runs: list[Callable[[np.ndarray], object]] = []
    for path in (bundle / "model.onnx", int8):
        sess = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        runs.append(functools.partial(_run_session, sess, sess.get_inputs()[0].name))
    times: list[list[float]] = [[], []]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 2 * seconds:
        for i, run in enumerate(runs):
            t = time.perf_counter()
            run(inputs[n % len(inputs)])
            if n >= 4:  # warm-up
                times[i].append(time.perf_counter() - t)
        n += 1
    fp32, q8 = (1.0 / statistics.median(t) for t in times)
    return fp32, q8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--smoke", action="store_true", help="a few seconds on the tests' carried clip")
    args = ap.parse_args()
    clip = SMOKE_CLIP if args.smoke else CLIP
    seconds = 1.0 if args.smoke else args.seconds
    if not clip.exists():
        raise SystemExit(f"the clip {clip} is missing (set CAMFLEET_TEST_DATA)")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        bundle = tmp / "imagenet"
        subprocess.run(
            [sys.executable, "-m", "camfleet_trainer", "export-default", "--out", str(bundle)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        rt = ClassifierRuntime(bundle)
        print(f"model: tf_efficientnet_lite0 (ImageNet head), ONNX Runtime CPU; clip {clip}")

        run = pipeline_ratio(rt, bundle, clip, seconds, tmp)
        raw, agent = statistics.median(run.raw), statistics.median(run.agent)
        print(f"raw ONNX Runtime, batch 1, preprocessed input: {raw:7.1f} frames/s (median of the raw windows)")
        print(f"agent pipeline, gate off (decode + preprocess + ORT + publish): {agent:7.1f} frames/s   {run.info()}")
        print(f"ratio agent / raw: {run.ratio:.2f}   (median of per-pair ratios; target >= 0.8)")
        # The stricter ceiling: ORT alone in the agent's own layout (its workers, each with its share of the cores).
        workers, threads = AgentSettings.model_validate(
            {"agent": AGENT, "site": SITE, "hub_url": "http://127.0.0.1:9"}
        ).inference_threads()
        laid_out = ClassifierRuntime(bundle, threads=threads)
        raw_window(laid_out, batches_of(rt, clip), 0.5, workers)  # warm-up
        same = raw_window(laid_out, batches_of(rt, clip), max(2.0, seconds / 4), workers)
        print(
            f"raw ONNX Runtime in the agent's layout ({workers} streams x {threads} thread(s), batch 1): {same:7.1f} "
            f"frames/s; agent / that = {agent / same:.2f} (measured after the pairs, not interleaved)"
        )

        quiet = quiet_clip(clip, tmp / "quiet.avi", 60 if args.smoke else 340)
        print("\n| clip | gate | captured | classified | classified ÷ captured | frames/s | CPU / frame | CPU |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, path in (("plaza", clip), ("quiet (held frame, then plaza)", quiet)):
            for gate in (False, True):
                print(gate_run(rt, path, name, gate).row(), flush=True)

        fp32, int8 = int8_speedup(bundle, clip, seconds, 8 if args.smoke else 64, tmp)
        print(f"\nbatch 1: FP32 {fp32:.1f} frames/s, INT8 {int8:.1f} frames/s, INT8 / FP32 = {int8 / fp32:.2f}x")


if __name__ == "__main__":
    main()
