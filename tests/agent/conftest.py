"""Agent test fixtures: signing keys, a real loopback HTTP server standing in for the hub's download side."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from camfleet_contract.signing import generate_signing_key, public_key_of

sys.path.insert(0, str(Path(__file__).parent))  # `from bundles import ...` under --import-mode=importlib

from mqttkit import Collector  # noqa: E402

KEYS_PATH = "api/v1/keys/fleet"


@dataclass
class StaticHub:
    """A real HTTP server on 127.0.0.1 serving files from `root`; `fail_next` answers 503 that many times."""

    root: Path
    url: str
    fail_next: int = 0
    requests: list[str] = field(default_factory=list)
    authorization: list[str | None] = field(default_factory=list)  # the Authorization header of each GET

    def put(self, name: str, data: bytes) -> str:
        """Serve `data` at /name; returns the path to put in an announcement."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return "/" + name

    def set_fleet_key(self, public_key: str) -> None:
        """What `GET /api/v1/keys/fleet` answers."""
        self.put(KEYS_PATH, json.dumps({"public_key": public_key}).encode())


class _Handler(SimpleHTTPRequestHandler):
    hub: StaticHub

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self.hub.requests.append(self.path)
        self.hub.authorization.append(self.headers.get("Authorization"))
        if self.hub.fail_next > 0:
            self.hub.fail_next -= 1
            self.send_error(503, "try again later")
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep the test output quiet
        pass


@pytest.fixture
def static_hub(tmp_path: Path) -> Iterator[StaticHub]:
    """A loopback HTTP server serving a temp folder (bundle zips, the fleet key)."""
    root = tmp_path / "www"
    root.mkdir()
    hub = StaticHub(root=root, url="")
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="static-hub", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def fleet_seed() -> str:
    """The fleet signing key (what the hub keeps)."""
    return generate_signing_key()


@pytest.fixture(scope="session")
def fleet_public(fleet_seed: str) -> str:
    return public_key_of(fleet_seed)


@pytest.fixture
def image_folder(test_data: Path, tmp_path: Path) -> Path:
    """Three real clothing photos (one per class) plus a text file that capture must skip."""
    folder = tmp_path / "camera"
    folder.mkdir()
    for i, cls in enumerate(("dress", "hat", "shoes")):
        src = sorted((test_data / "clothing" / "train" / cls).glob("*.jpg"))[0]
        shutil.copyfile(src, folder / f"{i:02d}_{cls}.jpg")
    (folder / "01a_notes.txt").write_text("not an image\n")
    return folder


@pytest.fixture
def collector(mosquitto) -> Iterator[Callable[[str], Collector]]:  # type: ignore[no-untyped-def]
    """Factory: `collector(topic_filter)` subscribes a recording client to the session broker."""
    made: list[Collector] = []

    def make(topic: str) -> Collector:
        c = Collector(mosquitto.host, mosquitto.port, topic)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()


@pytest.fixture
def site() -> str:
    """A fresh site name, so retained messages of other tests never interfere."""
    return f"site-{uuid.uuid4().hex[:10]}"
