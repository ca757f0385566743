"""Agent throughput: frames/s classified by the agent pipeline on the shared clip (decode + preprocess + ORT +
event publish, through Mosquitto) ÷ raw ONNX Runtime throughput of the same model at batch 1, in the same run.

The model is the default EfficientNet-Lite0 bundle (ImageNet head), exported by the trainer.
    python bench/agent.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLIP, clip_frames, mosquitto  # noqa: E402

from camfleet_contract.images import preprocess  # noqa: E402
from camfleet_contract.runtime import ClassifierRuntime  # noqa: E402

SITE, AGENT, CAMERA = "bench", "bench-agent", "plaza"


def raw_ort_rate(rt: ClassifierRuntime, seconds: float) -> float:
    """session.run at batch 1 on already preprocessed clip frames: the ceiling for the pipeline."""
    batches = [preprocess(f, rt.manifest.preprocessing)[None] for f in clip_frames(32)]
    for b in batches[:4]:
        rt.run(b)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        rt.run(batches[n % len(batches)])
        n += 1
    return n / (time.perf_counter() - start)


def agent_rate(bundle: Path, version: str, seconds: float, tmp: Path) -> tuple[float, dict]:
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
            f'fleet_public_key = "{signer}"\n[mqtt]\nport = {port}\n'
            f'[[cameras]]\nname = "{CAMERA}"\nsource = "{CLIP}"\nfps = 120\nupload_interval_s = 0\n'
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        bundle = tmp / "imagenet"
        subprocess.run(
            [sys.executable, "-m", "camfleet_trainer", "export-default", "--out", str(bundle)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        rt = ClassifierRuntime(bundle)
        raw = raw_ort_rate(rt, args.seconds)
        version = rt.version
        del rt
        agent, info = agent_rate(bundle, version, args.seconds, tmp)
    print(f"model: tf_efficientnet_lite0 (ImageNet head), ONNX Runtime CPU; clip {CLIP.name} 1280x720")
    print(f"raw ONNX Runtime, batch 1, preprocessed input: {raw:7.1f} frames/s")
    print(f"agent pipeline (decode + preprocess + ORT + publish): {agent:7.1f} frames/s   {info}")
    print(f"ratio agent / raw: {agent / raw:.2f}   (target >= 0.8)")


if __name__ == "__main__":
    main()
