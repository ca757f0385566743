"""The one-command demo: hub (embedded broker, SQLite, directory store) + trainer worker + one edge agent.

It imports the shipped sample as a site dataset, trains a quick model, promotes it, and shows the agent's
events as they arrive. The demo camera runs the motion gate and upload rules (anomalous, low confidence,
sampled, each with caps): the frames they send wait in the classifier's Triage with the model's suggestion,
which one key accepts (the active-learning loop); the demo says so once the first ones are there.
Everything runs on loopback; Ctrl-C stops the processes in reverse order.

Access: the hub's first admin gets a random password kept in ``<data-dir>/admin-password`` (printed at start);
the demo logs in with it and makes an every-site admin token for the trainer and a viewer token of the demo
site for the agent (the previous run's demo tokens are revoked). MQTT: the agent gets its own credentials from
the hub (``agent/demo/demo-agent``) and the demo's event watcher read-only observer ones; the hub's own client
uses the hub user. Secrets live in owner-only files (0600) in an owner-only folder (0700).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from camfleet_contract.messages import Event, MessageError, from_json
from camfleet_contract.rest import JobPublic
from camfleet_contract.signing import fingerprint, load_or_create_key, public_key_of
from camfleet_contract.topics import Topics
from camfleet_hub.core.comms.mqtt import MqttClient, Received

SITE, CLASSIFIER, AGENT, CAMERA = "demo", "clothing", "demo-agent", "shelf"
ADMIN = "admin"
TOKEN_NAMES = ("demo-trainer", "demo-agent")
WATCHER = "demo-watch"
# The demo camera's motion gate and upload rules (the agent's TOML): only frames with change are classified, and
# the frames worth a person's look are sent to the hub, where they wait in Triage with the model's suggestion.
# 1 in 3 frames is sampled: coprime with the 8 pictures the camera replays, so every picture comes round.
CAMERA_RULES = """[cameras.gate]
enabled = true
sensitivity = 0.5
keepalive_s = 30
[[cameras.uploads]]
rule = "anomalous"
hourly_cap = 30
daily_cap = 200
[[cameras.uploads]]
rule = "low_confidence"
below = 0.6
hourly_cap = 60
daily_cap = 400
[[cameras.uploads]]
rule = "sample"
every_n = 3
hourly_cap = 120
daily_cap = 1000
"""
RULES_LINE = (
    "motion gate on (still scenes: one classification every 30 s); upload rules: anomalous (30/h), "
    "low confidence < 0.6 (60/h), 1 in 3 frames sampled (120/h)"
)


def _private_dir(d: Path) -> Path:
    """The demo's folder, readable by its owner only (it holds passwords and tokens)."""
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    return d


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, also when it existed before with wider rights."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=Path("var/demo"), help="where the demo keeps its state")
    p.add_argument("--sample", type=Path, default=Path("demo/sample"), help="folder-per-class images to import")
    p.add_argument("--camera", type=Path, default=Path("demo/camera"), help="images the demo camera replays")
    p.add_argument("--port", type=int, default=8600, help="hub HTTP port")
    p.add_argument("--mqtt-port", type=int, default=11883, help="embedded MQTT broker port")


def _admin_password(d: Path) -> str:
    """The demo admin's password: made once, kept beside the demo's state (owner-only)."""
    path = _private_dir(d) / "admin-password"
    if path.exists():
        path.chmod(0o600)  # a file left by an older demo with wider rights
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    _write_private(path, password + "\n")
    return password


def _write_configs(
    args: argparse.Namespace, tokens: dict[str, str] | None = None, mqtt_login: tuple[str, str] = ("", "")
) -> dict[str, Path]:
    """The hub's config (``tokens`` None), or the trainer's and agent's with their tokens and MQTT login."""
    d = _private_dir(args.data_dir.resolve())
    hub_url = f"http://127.0.0.1:{args.port}"
    # The agent pins the fleet key by fingerprint: it fetches the key over plain http and checks it.
    fleet_sha = fingerprint(public_key_of(load_or_create_key(d / "hub" / "fleet.key")))
    files = {
        "hub": (
            f'data_dir = "{d / "hub"}"\n'
            f'[http]\nhost = "127.0.0.1"\nport = {args.port}\npublic_url = "{hub_url}"\n'
            f'[mqtt]\nembedded = true\nhost = "127.0.0.1"\nport = {args.mqtt_port}\n'
            f'[db]\nurl = "sqlite:///{d / "hub" / "hub.db"}"\n'
            f'[store]\nkind = "dir"\npath = "{d / "hub" / "objects"}"\n'
            f'[signing]\nkey_path = "{d / "hub" / "fleet.key"}"\n'
            f'[auth]\nadmin_username = "{ADMIN}"\nadmin_password = "{_admin_password(d)}"\n'
        ),
        "trainer": (
            f'hub_url = "{hub_url}"\nworker = "demo-trainer"\ncache_dir = "{d / "trainer"}"\n'
            f'signing_key_path = "{d / "trainer" / "trainer.key"}"\n'
            f'api_token = "{(tokens or {}).get("trainer", "")}"\n'
        ),
        "agent": (
            f'agent = "{AGENT}"\nsite = "{SITE}"\nhub_url = "{hub_url}"\ndata_dir = "{d / "agent"}"\n'
            f'api_token = "{(tokens or {}).get("agent", "")}"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {args.mqtt_port}\n'
            f'username = "{mqtt_login[0]}"\npassword = "{mqtt_login[1]}"\n'
            f'[models]\nfleet_key_sha256 = "{fleet_sha}"\n'
            f'[[cameras]]\nname = "{CAMERA}"\nsource = "{args.camera.resolve()}"\nfps = 1.0\n'
            "upload_interval_s = 0\nloop = true\n" + CAMERA_RULES
        ),
    }
    wanted = ("hub",) if tokens is None else ("trainer", "agent")
    paths = {}
    for name, text in files.items():
        if name not in wanted:
            continue
        paths[name] = d / f"{name}.toml"
        _write_private(paths[name], text)
    return paths


class _Processes:
    """Child processes, stopped in reverse start order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, module: str, *argv: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *argv], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise SystemExit(f"the {name} process stopped (exit {proc.returncode}); see {self.log_dir / name}.log")

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    print(f"  {name} did not stop in 20 s; killing it")
                    proc.kill()
            print(f"  stopped {name}")


def _wait_hub(client: httpx.Client, procs: _Processes, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check()
        try:
            if client.get("/api/v1/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the hub did not answer within 2 minutes")


def _login(client: httpx.Client, args: argparse.Namespace) -> None:
    """Log in as the admin; the session cookie stays in ``client``."""
    r = client.post(
        "/api/v1/auth/login", json={"username": ADMIN, "password": _admin_password(args.data_dir.resolve())}
    )
    if r.status_code != 200:
        raise SystemExit(
            f"could not log in as {ADMIN}: {r.status_code} {r.text} (delete {args.data_dir} to start over)"
        )
    if "x-csrf-token" in r.headers:  # the session's CSRF token, sent with every state-changing call
        client.headers["X-CSRF-Token"] = r.headers["x-csrf-token"]


def _mqtt_logins(client: httpx.Client) -> dict[str, tuple[str, str]]:
    """Fresh MQTT credentials for the agent and the event watcher (the previous run's are revoked)."""
    base = f"/api/v1/sites/{SITE}/mqtt-accounts"
    for account in client.get(base).json():
        if account["name"] in (AGENT, WATCHER) and account["revoked_at"] is None:
            client.delete(f"{base}/{account['id']}")
    made = {}
    for kind, name in (("agent", AGENT), ("observer", WATCHER)):
        r = client.post(base, json={"kind": kind, "name": name})
        if r.status_code != 201:
            raise SystemExit(f"could not create the MQTT account of {name}: {r.status_code} {r.text}")
        made[kind] = (str(r.json()["username"]), str(r.json()["password"]))
    return made


def _tokens(client: httpx.Client) -> dict[str, str]:
    """Fresh tokens for the trainer (every site, admin) and the agent (viewer of the demo site)."""
    for token in client.get("/api/v1/tokens").json():
        if token["name"] in TOKEN_NAMES and token["revoked_at"] is None:
            client.delete(f"/api/v1/tokens/{token['id']}")
    made = {}
    for key, name, site, role in (("trainer", "demo-trainer", None, "admin"), ("agent", "demo-agent", SITE, "viewer")):
        r = client.post("/api/v1/tokens", json={"name": name, "site": site, "role": role})
        if r.status_code != 201:
            raise SystemExit(f"could not create the {name} token: {r.status_code} {r.text}")
        made[key] = str(r.json()["token"])
    return made


def _ensure(client: httpx.Client, path: str, body: dict[str, object]) -> None:
    r = client.post(path, json=body)
    if r.status_code not in (200, 201, 409):
        raise SystemExit(f"POST {path} failed: {r.status_code} {r.text}")


def _train(client: httpx.Client, procs: _Processes) -> JobPublic:
    base = f"/api/v1/sites/{SITE}/classifiers/{CLASSIFIER}"
    r = client.post(f"{base}/jobs", json={"mode": "quick", "auto_promote": True})
    if r.status_code == 409:  # a job from an earlier run is still queued or running
        job_id = next(j["id"] for j in client.get(f"{base}/jobs").json() if j["status"] in ("queued", "running"))
    elif r.status_code in (200, 201):
        job_id = JobPublic.model_validate(r.json()).id
    else:
        raise SystemExit(f"could not start training: {r.status_code} {r.text}")
    last = ""
    while True:
        procs.check()
        job = JobPublic.model_validate(client.get(f"/api/v1/jobs/{job_id}").json())
        line = f"  training: {job.status} {job.stage or ''} {100 * job.progress:.0f}%"
        if line != last:
            print(line, flush=True)
            last = line
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(1.0)


def _watch_events(args: argparse.Namespace, login: tuple[str, str]) -> MqttClient:
    topics = Topics()
    client = MqttClient(
        "127.0.0.1", args.mqtt_port, f"camfleet-demo-{os.getpid()}", username=login[0], password=login[1]
    )

    def on_message(msg: Received) -> None:
        try:
            ev = from_json(Event, msg.payload)
        except MessageError:
            return
        flag = "  ANOMALY" if ev.anomaly else ""
        print(
            f"  event {ev.camera}/{ev.classifier} v{ev.model_version}: {ev.label} "
            f"({ev.probability:.2f}, anomaly score {ev.anomaly_score:.2f}){flag}",
            flush=True,
        )

    client.subscribe(topics.event(SITE, CAMERA), on_message, qos=1)
    client.start()
    return client


def _triage_line(client: httpx.Client, hub_url: str) -> str | None:
    """One line once camera frames wait in Triage with a suggestion naming a group; None until then."""
    r = client.get(f"/api/v1/sites/{SITE}/classifiers/{CLASSIFIER}/triage", params={"limit": 500})
    if r.status_code != 200:
        return None
    ready = [i for i in r.json() if i.get("camera") and (i.get("suggestion") or {}).get("group")]
    if not ready:
        return None
    rules: dict[str, int] = {}
    for i in ready:
        rules[i["rule_text"] or "unknown rule"] = rules.get(i["rule_text"] or "unknown rule", 0) + 1
    sent = ", ".join(f"{rule}: {n}" for rule, n in sorted(rules.items()))
    first = ready[0]["suggestion"]
    return (
        f"  triage: {len(ready)} frame(s) of camera {CAMERA} wait in triage with the model's suggestion "
        f"(sent as {sent}; e.g. {first['group']} {100 * first['probability']:.0f}%); press a to accept one:\n"
        f"         {hub_url}/ui/sites/{SITE}/classifiers/{CLASSIFIER}/triage"
    )


def _set_up(client: httpx.Client, args: argparse.Namespace, procs: _Processes) -> dict[str, tuple[str, str]]:
    """The demo site, camera and classifier, MQTT logins and tokens; then the trainer and the agent start."""
    _ensure(client, "/api/v1/sites", {"name": SITE})
    _ensure(client, f"/api/v1/sites/{SITE}/cameras", {"name": CAMERA})
    _ensure(client, f"/api/v1/sites/{SITE}/classifiers", {"name": CLASSIFIER})
    logins = _mqtt_logins(client)
    _write_private(args.data_dir.resolve() / "observer-password", logins["observer"][1] + "\n")
    configs = _write_configs(args, _tokens(client), logins["agent"])
    print("starting the trainer worker and the edge agent ...")
    print(f"  camera {CAMERA}: {RULES_LINE}")
    procs.start("trainer", "camfleet_trainer", "worker", "--config", str(configs["trainer"]))
    procs.start("agent", "camfleet_agent", "run", "--config", str(configs["agent"]))
    return logins


def _import_sample(client: httpx.Client, sample: Path) -> None:
    r = client.post(f"/api/v1/sites/{SITE}/classifiers/{CLASSIFIER}/import?wait=true", json={"path": str(sample)})
    if r.status_code >= 400:
        raise SystemExit(f"import failed: {r.status_code} {r.text}")
    result = r.json()
    if result["status"] != "succeeded":
        raise SystemExit(f"import {result['status']}: {result.get('message')}")
    print(f"imported the sample: {json.dumps(result['counts'].get('groups', result['counts']))}")
    rejected = client.get(f"/api/v1/imports/{result['id']}/items", params={"outcome": "rejected"}).json()
    for item in rejected["items"]:
        print(f"  skipped {item['name']}: {item['reason']}")


def _tell_where(hub_url: str, args: argparse.Namespace, observer: str) -> None:
    data_dir = args.data_dir.resolve()
    print(f"  open {hub_url}/            the hub: frames, dataset, models, agents")
    print(f"       log in as {ADMIN} / {_admin_password(data_dir)}  (kept in {data_dir / 'admin-password'})")
    print(f"       {hub_url}/docs        the REST API (try POST /api/v1/classify)")
    print(
        f"  MQTT events: mosquitto_sub -h 127.0.0.1 -p {args.mqtt_port} -u {observer} "
        f"-P \"$(cat {data_dir / 'observer-password'})\" -t 'camfleet/v1/{SITE}/+/event' -v"
    )
    print("  logs and state in", data_dir, "- press Ctrl-C to stop\n")


def _run_until_stopped(stop: threading.Event, procs: _Processes, client: httpx.Client, hub_url: str) -> None:
    triage_told, polls = False, 0
    while not stop.wait(1.0):
        procs.check()
        polls += 1
        if not triage_told and polls % 5 == 0:  # the frames the rules send, once they carry a suggestion
            line = _triage_line(client, hub_url)
            if line:
                print(line, flush=True)
                triage_told = True


def main(args: argparse.Namespace) -> int:
    for path, what in ((args.sample, "--sample"), (args.camera, "--camera")):
        if not path.is_dir():
            print(f"{what} folder {path} does not exist (run from the repository root)", file=sys.stderr)
            return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll drowns the demo's own output
    configs = _write_configs(args)
    procs = _Processes(args.data_dir.resolve())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Ctrl-C stops the demo even when it was started from a script in the background, where the shell leaves
    # SIGINT ignored and Python would inherit that (CI saw the demo ignore it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    hub_url = f"http://127.0.0.1:{args.port}"
    watcher: MqttClient | None = None
    try:
        print(f"starting the hub on {hub_url} (embedded MQTT broker on 127.0.0.1:{args.mqtt_port}) ...")
        procs.start("hub", "camfleet_hub", "serve", "--config", str(configs["hub"]))
        client = httpx.Client(base_url=hub_url, timeout=60.0)
        _wait_hub(client, procs)
        _login(client, args)
        logins = _set_up(client, args, procs)
        watcher = _watch_events(args, logins["observer"])
        _import_sample(client, args.sample.resolve())
        print("training a quick model (the first run also builds the ImageNet default model) ...")
        job = _train(client, procs)
        if job.status != "succeeded":
            raise SystemExit(f"training {job.status}: {job.message}")
        print("model promoted. The agent pulls it and its events now carry the new version.\n")
        _tell_where(hub_url, args, logins["observer"][0])
        _run_until_stopped(stop, procs, client, hub_url)
        return 0
    except KeyboardInterrupt:
        return 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 1
        raise
    finally:
        print("stopping ...")
        if watcher is not None:
            watcher.stop()  # before the hub (and its broker) stops: a clean disconnect, no reconnect back-off to wait
        procs.stop()
