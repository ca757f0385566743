"""The whole loop on real parts, each in its own process:

camera (video clip + image folder) → agent → Mosquitto → hub ingest → S3 (moto server) + PostgreSQL → dataset
import → trainer worker (quick model) → promote → agent pulls the signed bundle → events carry the new version →
REST classify agrees with the agent on the same image.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest

from camfleet_contract.messages import Event, from_json
from camfleet_contract.signing import fingerprint, load_or_create_key, public_key_of
from camfleet_contract.topics import Topics
from tests.support.procs import Procs

pytestmark = pytest.mark.e2e

SITE, CLF, AGENT = "e2e", "clothing", "agent-1"
ADMIN_PASSWORD = "e2e-admin-password"


def wait_for(what: str, check: Callable[[], object], procs: Procs, timeout: float) -> object:
    return procs.wait_for(what, check, timeout)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    p.stop()


def _zip_folder(root: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(root.rglob("*.jpg")):
            zf.write(f, f.relative_to(root).as_posix())
    return buf.getvalue()


def test_whole_loop(tmp_path, procs, mosquitto, pg_url, s3, clothing_subset, test_data, free_port) -> None:
    http_port = free_port()
    hub_url = f"http://127.0.0.1:{http_port}"
    (tmp_path / "hub.toml").write_text(
        f'data_dir = "{tmp_path / "hub"}"\n'
        f"[http]\nport = {http_port}\n"
        f'[mqtt]\nembedded = false\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\nclient_id = "e2e-hub"\n'
        f'[db]\nurl = "{pg_url}"\n'
        f'[store]\nkind = "s3"\nendpoint = "{s3.endpoint}"\naccess_key = "{s3.access_key}"\n'
        f'secret_key = "{s3.secret_key}"\nbucket = "{s3.new_bucket()}"\n'
        f'[auth]\nadmin_password = "{ADMIN_PASSWORD}"\n'
    )
    procs.start("hub", "camfleet_hub", "serve", "--config", str(tmp_path / "hub.toml"))
    api = httpx.Client(base_url=hub_url, timeout=60)

    def healthy() -> bool:
        try:
            return api.get("/api/v1/health").status_code == 200
        except httpx.TransportError:
            return False

    wait_for("the hub", healthy, procs, 120)
    # Log in as the first admin, then act with tokens: the script's and the trainer's span every site (admin),
    # the agent's is a viewer token of its own site.
    login = api.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert login.status_code == 200
    api.headers["X-CSRF-Token"] = login.headers["x-csrf-token"]  # cookie requests that change state need it

    def token(name: str, site: str | None, role: str) -> str:
        r = api.post("/api/v1/tokens", json={"name": name, "site": site, "role": role})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    # The site is made from the admin's session, then the tokens (a token never makes tokens: the agent's
    # viewer token names the site, so it comes after); then the session is dropped and only tokens act.
    for path, body in [
        ("/api/v1/sites", {"name": SITE}),
        (f"/api/v1/sites/{SITE}/cameras", {"name": "plaza"}),
        (f"/api/v1/sites/{SITE}/cameras", {"name": "shelf"}),
        (f"/api/v1/sites/{SITE}/classifiers", {"name": CLF}),
    ]:
        assert api.post(path, json=body).status_code == 201, path
    tokens = {
        "script": token("e2e-script", None, "admin"),
        "trainer": token("e2e-trainer", None, "admin"),
        "agent": token("e2e-agent", SITE, "viewer"),
    }
    api.headers["Authorization"] = f"Bearer {tokens['script']}"
    api.cookies.clear()
    del api.headers["X-CSRF-Token"]
    assert api.get("/api/v1/auth/me").status_code == 200  # the script token acts alone from here

    # Events from the bus, as any subscriber sees them.
    events: list[Event] = []
    lock = threading.Lock()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-listener")
    sub.on_message = lambda c, u, m: (lock.acquire(), events.append(from_json(Event, m.payload)), lock.release())
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe(f"{Topics().prefix}/{SITE}/+/event", qos=1)
    sub.loop_start()

    (tmp_path / "trainer.toml").write_text(
        f'hub_url = "{hub_url}"\nworker = "e2e-trainer"\ncache_dir = "{tmp_path / "trainer"}"\n'
        f'signing_key_path = "{tmp_path / "trainer" / "t.key"}"\npoll_interval_s = 0.5\n'
        f'api_token = "{tokens["trainer"]}"\n'
    )
    procs.start("trainer", "camfleet_trainer", "worker", "--config", str(tmp_path / "trainer.toml"))

    shelf = tmp_path / "shelf"
    shelf.mkdir()
    for f in sorted((clothing_subset / "validation").rglob("*.jpg")):
        shutil.copy(f, shelf / f"{f.parent.name}_{f.name}")
    fleet_sha = fingerprint(public_key_of(load_or_create_key(tmp_path / "hub" / "fleet.key")))  # made by the hub
    (tmp_path / "agent.toml").write_text(
        f'agent = "{AGENT}"\nsite = "{SITE}"\nhub_url = "{hub_url}"\ndata_dir = "{tmp_path / "agent"}"\n'
        f'api_token = "{tokens["agent"]}"\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        f'[models]\nfleet_key_sha256 = "{fleet_sha}"\n'
        f'[[cameras]]\nname = "plaza"\nsource = "{test_data / "video" / "plaza.avi"}"\n'
        "fps = 2\nupload_interval_s = 1\n"
        f'[[cameras]]\nname = "shelf"\nsource = "{shelf}"\nfps = 2\nupload_interval_s = 0\n'
    )
    procs.start("agent", "camfleet_agent", "run", "--config", str(tmp_path / "agent.toml"))

    # camera → agent → MQTT → hub ingest → S3 + PostgreSQL
    frames = wait_for(
        "frames from the plaza camera in the hub",
        lambda: [
            f for f in api.get("/api/v1/frames", params={"site": SITE, "limit": 50}).json() if f["camera"] == "plaza"
        ],
        procs,
        180,
    )
    frame = frames[0]
    img = api.get(f"/api/v1/frames/{frame['frame_id']}/image")
    assert img.status_code == 200 and img.content[:2] == b"\xff\xd8"

    # Before any site model: the ImageNet default answers, on the agent and over REST.
    def events_of(clf: str, version: str | None = None) -> list[Event]:
        with lock:
            return [e for e in events if e.classifier == clf and (version is None or e.model_version == version)]

    wait_for("ImageNet default events", lambda: events_of("imagenet"), procs, 300)

    # dataset: a zip of real images, folder per class
    r = api.post(
        f"/api/v1/sites/{SITE}/classifiers/{CLF}/import?wait=true",
        files={"file": ("train.zip", _zip_folder(clothing_subset / "train"), "application/zip")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded" and r.json()["counts"]["imported"] == 60

    r = api.post(f"/api/v1/sites/{SITE}/classifiers/{CLF}/jobs", json={"mode": "quick"})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    job = wait_for(
        "the training job",
        lambda: (j := api.get(f"/api/v1/jobs/{job_id}").json())["status"] in ("succeeded", "failed") and j,
        procs,
        600,
    )
    assert job["status"] == "succeeded", job
    models = api.get(f"/api/v1/sites/{SITE}/classifiers/{CLF}/models").json()
    assert len(models) == 1 and models[0]["status"] == "candidate"
    model = models[0]
    assert api.post(f"/api/v1/models/{model['id']}/promote").status_code == 200
    version = str(model["version"])

    # agent swaps to the promoted model; its events carry the new version
    wait_for(f"events of {CLF} v{version}", lambda: events_of(CLF, version), procs, 180)
    shelf_events = wait_for(
        "shelf events of the new model", lambda: [e for e in events_of(CLF, version) if e.camera == "shelf"], procs, 60
    )
    assert all(e.label in {"dress", "hat", "shoes"} for e in shelf_events)

    # REST classify agrees with the agent on the same image
    bundle = tmp_path / "agent" / "models" / CLF / version
    assert (bundle / "manifest.json").exists()
    images = sorted(shelf.glob("*.jpg"))
    cli = subprocess.run(
        [sys.executable, "-m", "camfleet_agent", "classify", "--bundle", str(bundle), "--json", *map(str, images)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    agent_results = [json.loads(line) for line in cli.stdout.splitlines() if line.strip()]
    rest = api.post(
        "/api/v1/classify",
        data={"site": SITE, "classifier": CLF},
        files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in images],
    )
    assert rest.status_code == 200, rest.text
    body = rest.json()
    assert str(body["model"]["version"]) == version and not body["model"]["default"]
    correct = 0
    for path, a, h in zip(images, agent_results, body["results"], strict=True):
        assert a["label"] == h["label"], path
        assert abs(a["probability"] - h["probability"]) < 1e-4
        assert a["anomaly"] == h["anomaly"]
        correct += h["label"] == path.name.split("_")[0]
    assert correct >= 0.8 * len(images), f"only {correct}/{len(images)} validation images right"
    sub.loop_stop()
    sub.disconnect()
