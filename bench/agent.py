"""Agent benchmarks on the shared plaza clip, each against a baseline measured in the same run:

1. pipeline ÷ raw ONNX Runtime, gate off: frames/s classified by the real agent (`python -m camfleet_agent run`:
   decode → preprocess → ORT → event published QoS 1 to Mosquitto, counted by a subscriber) ÷ `session.run` at
   batch 1 on already preprocessed frames (target >= 0.8);
2. the motion gate, on and off, per camera (in-process pipeline, every frame of the clip, events to memory):
   share of captured frames classified, frames/s and CPU per camera, on the busy plaza clip and on a "quiet"
   clip (the plaza's first frame held for as long again, then the clip);
3. INT8 ÷ FP32 speed at batch 1 (the FP32 model quantised as the trainer does, calibrated on clip frames).

The model is the default EfficientNet-Lite0 bundle (ImageNet head), exported by the trainer.
    python bench/agent.py [--seconds 20]
    python bench/agent.py --smoke          # a few seconds on the tests' carried clip: does every part still run
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLIP, REPO, mosquitto  # noqa: E402

from camfleet_agent.capture import open_source  # noqa: E402
from camfleet_agent.config import CameraSettings  # noqa: E402
from camfleet_agent.events import Identity  # noqa: E402
from camfleet_agent.pipeline import CameraPipeline  # noqa: E402
from camfleet_contract.images import preprocess  # noqa: E402
from camfleet_contract.runtime import ClassifierRuntime  # noqa: E402
from camfleet_contract.topics import Topics  # noqa: E402

SITE, AGENT, CAMERA = "bench", "bench-agent", "plaza"
SMOKE_CLIP = REPO / "tests" / "data" / "video" / "plaza.avi"


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


def timed_rate(run: object, inputs: list[np.ndarray], seconds: float) -> float:
    """Calls of `run(x)` per second over `seconds`, after a short warm-up."""
    for x in inputs[:4]:
        run(x)  # type: ignore[operator]
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(inputs[n % len(inputs)])  # type: ignore[operator]
        n += 1
    return n / (time.perf_counter() - start)


def raw_ort_rate(rt: ClassifierRuntime, clip: Path, seconds: float) -> float:
    """session.run at batch 1 on already preprocessed clip frames: the ceiling for the pipeline."""
    batches = [preprocess(f, rt.manifest.preprocessing)[None] for f in read_frames(clip, 32)]
    return timed_rate(rt.run, batches, seconds)


def agent_rate(bundle: Path, version: str, clip: Path, seconds: float, tmp: Path) -> tuple[float, dict]:
    """The agent process on `clip` with the gate off, as fast as it goes: events/s counted by a subscriber."""
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
            f'[[cameras]]\nname = "{CAMERA}"\nsource = "{clip}"\nfps = 120\nupload_interval_s = 0\n'
            "[cameras.gate]\nenabled = false\n"
        )
        times: list[float] = []
        latencies: list[float] = []
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-agent-sub")

        def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
            times.append(time.perf_counter())
            latencies.append(json.loads(msg.payload)["latency_ms"])

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
            while len(times) < 20 and time.monotonic() < deadline:  # warm-up: model loaded, caches hot
                time.sleep(0.2)
            if len(times) < 20:
                raise SystemExit(
                    f"the agent published no events; see {tmp / 'agent.log'}:\n"
                    + (tmp / "agent.log").read_text()[-3000:]
                )
            first = len(times)
            start = time.perf_counter()
            time.sleep(seconds)
            n = len(times) - first
            rate = n / (time.perf_counter() - start)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            sub.loop_stop()
        lat = sorted(latencies[first:]) or [0.0]
        return rate, {"events": n, "p50_latency_ms": lat[len(lat) // 2], "p95_latency_ms": lat[int(len(lat) * 0.95)]}


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


def int8_speedup(bundle: Path, clip: Path, seconds: float, calibration: int, tmp: Path) -> tuple[float, float]:
    """Batch-1 frames/s of the FP32 model and of its INT8 quantisation (as the trainer makes it)."""
    import onnxruntime as ort

    from camfleet_trainer.quantize import quantize_int8

    rt = ClassifierRuntime(bundle)
    inputs = [preprocess(f, rt.manifest.preprocessing)[None] for f in read_frames(clip, max(calibration, 16))]
    int8 = tmp / "model.int8.onnx"
    quantize_int8(bundle / "model.onnx", int8, np.concatenate(inputs[:calibration]))
    rates = []
    for path in (bundle / "model.onnx", int8):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        rates.append(timed_rate(lambda x, s=sess, n=name: s.run(None, {n: x}), inputs, seconds))
    return rates[0], rates[1]


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
        version = rt.version
        print(f"model: tf_efficientnet_lite0 (ImageNet head), ONNX Runtime CPU; clip {clip}")

        raw = raw_ort_rate(rt, clip, seconds)
        agent, info = agent_rate(bundle, version, clip, seconds, tmp)
        print(f"raw ONNX Runtime, batch 1, preprocessed input: {raw:7.1f} frames/s")
        print(f"agent pipeline, gate off (decode + preprocess + ORT + publish): {agent:7.1f} frames/s   {info}")
        print(f"ratio agent / raw: {agent / raw:.2f}   (target >= 0.8)")

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
