"""Shared by the benchmarks: a private Mosquitto on loopback, real frames from the shared clip, timing helpers."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CAMFLEET_TEST_DATA", REPO.parent / "shared" / "data"))
CLIP = SHARED_DATA / "video" / "plaza.avi"
# The tests' carried subset (clothing images, a 60-frame plaza clip): what every bench's --smoke runs on.
SMOKE_DATA = REPO / "tests" / "data"
# --smoke trains on lite0 alone: the same code as the quick recipe's stack, at a quarter of the forward and export time.
SMOKE_BACKBONES = "lite0"
# Debian's Chromium for screenshots, headless, never talking to the network on its own.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def threads_rate(step: Callable[[int, int], int], streams: int, seconds: float) -> float:
    """Items/s of `step(stream, call)` (it returns the items it did) called in a loop from `streams` threads at
    once for `seconds`: ORT alone in a program's own layout of concurrent runs."""
    counts = [0] * streams
    start = time.perf_counter()

    def loop(stream: int) -> None:
        call = 0
        while time.perf_counter() - start < seconds:
            counts[stream] += step(stream, call)
            call += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def add_recipe_options(ap: argparse.ArgumentParser) -> None:
    """--backbones, --view and --pooling: the quick recipe a bench measures (default: quick mode's own)."""
    from camfleet_trainer.config import DEFAULT_QUICK_POOLING, DEFAULT_QUICK_VIEW, POOLINGS, VIEWS

    ap.add_argument(
        "--backbones",
        default=None,
        help=f"quick mode's backbones, comma-separated (lite0,lite2 or timm names; default: quick mode's own; "
        f"with --smoke: {SMOKE_BACKBONES})",
    )
    ap.add_argument("--view", choices=list(VIEWS), default=DEFAULT_QUICK_VIEW, help="quick mode's view")
    ap.add_argument("--pooling", choices=list(POOLINGS), default=DEFAULT_QUICK_POOLING, help="quick mode's pooling")


def chosen_backbones(args: argparse.Namespace, quick_default: Sequence[str]) -> str:
    """The ``--backbones`` given, else lite0 for ``--smoke``, else quick mode's own recipe."""
    return str(args.backbones or (SMOKE_BACKBONES if args.smoke else ",".join(quick_default)))


def require_shared(*paths: Path) -> None:
    """One line and exit code 2 when the shared data a full run needs is missing (``--smoke`` needs none)."""
    for path in paths:
        if not path.exists():
            print(
                f"{Path(sys.argv[0]).name}: the shared data {path} is missing "
                "(set CAMFLEET_TEST_DATA, or run with --smoke on the tests' carried data)",
                file=sys.stderr,
            )
            raise SystemExit(2)


# Ports for servers started in other processes are drawn below Linux's ephemeral range (32768-60999), where every
# outgoing connection's local port comes from: between the check here and the server's own bind, a client could
# otherwise take it. Under pytest-xdist (the benches' --smoke runs inherit its variables) each worker has its own
# slice, so two workers never pick the same port. The tests use the same function.
PORTS = range(20000, 32000)


def _port_slice() -> range:
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]  # "gw0", "gw1", ...
    index = int(worker) % count if worker.isdigit() else 0
    width = len(PORTS) // count
    return range(PORTS.start + index * width, PORTS.start + (index + 1) * width)


def free_port(taken: set[int] | frozenset[int] = frozenset()) -> int:
    """A loopback TCP port that nothing listens on now (and not in ``taken``)."""
    ports = _port_slice()
    for _ in range(500):
        port = random.choice(ports)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free loopback port in {ports.start}-{ports.stop - 1}")


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


@contextmanager
def mosquitto() -> Iterator[int]:
    """A private broker with persistence off; yields its port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "m.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
            "max_inflight_messages 1000\nmessage_size_limit 10000000\n"
        )
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def clip_frames(limit: int, width: int = 0) -> Iterator:
    """RGB frames of the shared clip (optionally resized to `width`), looping."""
    if not CLIP.exists():
        raise SystemExit(f"the shared clip {CLIP} is missing (set CAMFLEET_TEST_DATA)")
    n = 0
    while n < limit:
        cap = cv2.VideoCapture(str(CLIP))
        while n < limit:
            ok, bgr = cap.read()
            if not ok:
                break
            if width:
                bgr = cv2.resize(bgr, (width, round(bgr.shape[0] * width / bgr.shape[1])), interpolation=cv2.INTER_AREA)
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            n += 1
        cap.release()


@contextmanager
def hub_process(workdir: Path, config: str, timeout: float = 60.0) -> Iterator[str]:
    """``python -m camfleet_hub serve`` with ``data_dir`` under ``workdir``, a free HTTP port and the TOML
    ``config`` (sections after those two keys); yields its base URL once /health answers, stops it afterwards."""
    import sys

    import httpx

    port = free_port()
    cfg = workdir / "hub.toml"
    cfg.write_text(f'data_dir = "{workdir / "hub"}"\n[http]\nport = {port}\n{config}')
    url = f"http://127.0.0.1:{port}"
    with open(workdir / "hub.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "camfleet_hub", "serve", "--config", str(cfg)], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the hub exited ({proc.returncode}); see {workdir / 'hub.log'}")
            try:
                if httpx.get(f"{url}/api/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the hub did not answer /health within {timeout:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # never leave a hub running after the bench
            proc.kill()
            proc.wait(timeout=30)
