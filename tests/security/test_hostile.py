"""Hostile inputs: each case is refused clearly (status + a message naming what was wrong), the hub still answers
afterwards, and nothing was written or lost (row counts of the data tables and the object store unchanged).
The cases are listed in docs/SECURITY.md ("Hostile-input suite")."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytest

from camfleet_contract.bundle import BundleError, Manifest, check_scope
from camfleet_hub.auth.models import ApiToken, SiteRole, User
from camfleet_hub.datasets.models import Blob, Classifier, Frame, Group, Image, Site
from camfleet_hub.training.models import ModelVersion, TrainingJob
from tests.security.world import ADMIN_USER, API, ORIGIN, PASSWORD, World, running_world
from tests.support.polling import unique

DATA_TABLES = (Site, Classifier, Group, Image, Blob, User, SiteRole, ApiToken, TrainingJob, ModelVersion, Frame)
CLF = f"{API}/sites/site-a/classifiers/clf"
REFUSED = (400, 401, 403, 404, 409, 413, 415, 422, 429)


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[World], Any]
    statuses: tuple[int, ...]
    says: tuple[str, ...] = ()  # the refusal names one of these (case-insensitive); empty: any message
    never_says: tuple[str, ...] = ()  # and never echoes these


# --------------------------------------------------------------------------- inputs


def _jpeg(width: int, height: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.zeros((height, width, 3), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 10])
    assert ok
    return buf.tobytes()


def _forged_jpeg(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) claims ``width`` × ``height``: the pixel budget must refuse it
    from the header, before any decoding."""
    data = bytearray(_jpeg(16, 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def _zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def _symlink(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (0o120777) << 16
    return info


@dataclass
class Answer:
    """A refusal found after the fact (an import job whose every item was rejected), shaped like a response."""

    status_code: int
    text: str


def _job_refusal(w: World, r: Any) -> Any:
    """An import refused item by item: the job ends with nothing imported, each item rejected with a reason.
    That counts as a clear refusal (422 + the reasons); a job that imported anything stays a 200."""
    if r.status_code not in (200, 202):
        return r
    job = r.json()
    for _ in range(300):  # bounded: the job runs in the hub's import worker
        if job["status"] not in ("queued", "running"):
            break
        job = w.admin.get(f"{API}/imports/{job['id']}").json()
        time.sleep(0.05)
    items = w.admin.get(f"{API}/imports/{job['id']}/items").json()["items"]
    rejected = job["status"] == "failed" or (items and all(i["outcome"] == "rejected" for i in items))
    reasons = " | ".join([str(job.get("message") or "")] + [str(i["reason"]) for i in items])
    return Answer(422 if rejected else 200, reasons)


def _zip_import(data: bytes) -> Callable[[World], Any]:
    def call(w: World) -> Any:
        r = w.admin.post(f"{CLF}/import?wait=true", files={"file": ("d.zip", data, "application/zip")})
        return _job_refusal(w, r)

    return call


def _url_import(url: str) -> Callable[[World], Any]:
    return lambda w: _job_refusal(w, w.client("labeller_token").post(f"{CLF}/import", json={"urls": [url]}))


def _folder_import(path: str, role: str = "fleet_token") -> Callable[[World], Any]:
    return lambda w: _job_refusal(w, w.client(role).post(f"{CLF}/import", json={"path": path}))


def _classify(*images: bytes) -> Callable[[World], Any]:
    def call(w: World) -> Any:
        files = [("files", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
        return w.client("viewer_token").post(
            f"{API}/classify", data={"site": "site-a", "classifier": "clf"}, files=files
        )

    return call


def _admin_id(w: World) -> int:
    return int(w.accounts().get(f"{API}/auth/me").json()["user_id"])


def _login_spray(w: World) -> Any:
    """Rotating X-Forwarded-For and usernames: the limit still applies (per address and per password spray)."""
    client = w.anonymous()
    last = None
    for i in range(40):
        last = client.post(
            f"{API}/auth/login",
            json={"username": f"{ADMIN_USER}" if i % 2 else f"user{i}", "password": "Winter2026!"},
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
        )
        if last.status_code == 429:
            break
    return last


def _cli(*args: str) -> Callable[[World], Any]:
    @dataclass
    class Done:
        status_code: int
        text: str

    def call(_w: World) -> Any:
        done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)
        # argparse and the CLIs' own refusals exit 2 / 1; a traceback is not a clear refusal
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        return Done(status_code=400 if done.returncode in (1, 2) else 500 + done.returncode, text=done.stderr)

    return call


def _bundle_scope(site: str, classifier: str) -> Callable[[World], Any]:
    """The agent's check of a bundle meant for another site or classifier (contract check_scope)."""

    @dataclass
    class Done:
        status_code: int
        text: str

    def call(_w: World) -> Any:
        manifest = Manifest.model_validate(
            {
                "site": "site-b",
                "classifier": "clf",
                "version": "3",
                "classes": ["a", "b"],
                "backbone": "x",
                "embedding_dim": 8,
                "preprocessing": {"size": 32, "resize": 32},
                "anomaly": {"conf_ref": [0.1, 0.2]},
            }
        )
        try:
            check_scope(manifest, site, classifier)
        except BundleError as exc:
            return Done(422, str(exc))
        return Done(200, "accepted")

    return call


BIG_JSON = b'{"name": "' + b"x" * (70 * 1024 * 1024) + b'"}'
ZIP_BOMB = _zip([("dress/bomb.jpg", b"\0" * (300 * 1024 * 1024))])

CASES = [
    # ------------------------------------------------------------------ REST: auth and accounts
    Case(
        "bearer garbage",
        lambda w: w.anonymous().get(f"{API}/sites", headers={"Authorization": "Bearer x"}),
        (401,),
        ("token",),
    ),
    Case(
        "basic auth",
        lambda w: w.anonymous().get(f"{API}/sites", headers={"Authorization": "Basic eDp5"}),
        (401,),
        ("bearer",),
    ),
    Case(
        "token of 10 kB",
        lambda w: w.anonymous().get(f"{API}/sites", headers={"Authorization": "Bearer " + "a" * 10_000}),
        (401, 431),
        (),
    ),
    Case(
        "viewer token resets the admin's password",
        lambda w: w.client("viewer_token").patch(f"{API}/users/{_admin_id(w)}", json={"password": "owned-by-agent-1"}),
        (403,),
        ("session",),
    ),
    Case(
        "viewer token mints a token",
        lambda w: w.client("viewer_token").post(f"{API}/tokens", json={"name": "x", "site": "site-a"}),
        (403,),
        ("session",),
    ),
    Case(
        "fleet token creates a hub admin",
        lambda w: w.client("fleet_token").post(
            f"{API}/users", json={"username": unique("u"), "password": PASSWORD, "is_admin": True}
        ),
        (403,),
        ("session",),
    ),
    Case("token lists tokens", lambda w: w.client("labeller_token").get(f"{API}/tokens"), (403,), ("session",)),
    Case(
        "own password change without the current one",
        lambda w: w.client("viewer_session").patch(
            f"{API}/users/{w.user_ids['viewer_session']}", json={"password": "new-password-99"}
        ),
        (400, 403, 422),
        ("current",),
    ),
    Case(
        "validation error does not echo the password",
        lambda w: w.accounts().post(f"{API}/users", json={"username": "bad name!", "password": "Sekr3t-Echo-Me"}),
        (422,),
        ("username",),
        ("Sekr3t-Echo-Me",),
    ),
    Case(
        "site admin grants a role in another site",
        lambda w: w.client("site_admin_session").put(
            f"{API}/users/{w.sites['b'].member_user_id}/roles/site-b", json={"role": "admin"}
        ),
        (403, 404),
        ("site",),
    ),
    # ------------------------------------------------------------------ REST: CSRF
    Case(
        "cross-origin POST with the admin's cookie",
        lambda w: w.accounts().post(
            f"{API}/users",
            json={"username": unique("csrf"), "password": PASSWORD, "is_admin": True},
            headers={"Origin": "https://evil.example"},
        ),
        (403,),
        ("origin", "csrf", "cross"),
    ),
    Case(
        "cookie POST without the CSRF token",
        lambda w: w.login(ADMIN_USER, "admin-password-1").post(
            f"{API}/sites", json={"name": unique("s")}, headers={"X-CSRF-Token": ""}
        ),
        (403,),
        ("csrf",),
    ),
    Case(
        "Sec-Fetch-Site cross-site form post",
        lambda w: w.accounts().post("/ui/sites", data={"name": unique("s")}, headers={"Sec-Fetch-Site": "cross-site"}),
        (403,),
        ("cross", "csrf", "site"),
    ),
    # ------------------------------------------------------------------ REST: malformed and oversized input
    Case("id above 2^63", lambda w: w.admin.get(f"{API}/images/{2**64 + 5}"), (404, 422), ("image", "2^63")),
    Case("negative id", lambda w: w.admin.get(f"{API}/jobs/-1"), (404, 422), ("job",)),
    Case(
        "id above 2^63 in a form route",
        lambda w: w.accounts().post(f"/ui/images/{2**70}/group", data={"group": "hat"}),
        (404, 422),
        (),
    ),
    Case(
        "broken JSON",
        lambda w: w.admin.post(f"{API}/sites", content=b'{"name": ', headers={"content-type": "application/json"}),
        (400, 422),
        ("json",),
    ),
    Case(
        "unknown field",
        lambda w: w.admin.post(f"{API}/sites", json={"name": unique("s"), "owner": "me"}),
        (422,),
        ("owner",),
    ),
    Case("site name with a slash", lambda w: w.admin.post(f"{API}/sites", json={"name": "a/../b"}), (422,), ("name",)),
    Case(
        "site name with MQTT wildcards",
        lambda w: w.admin.post(f"{API}/sites", json={"name": "shop/#"}),
        (422,),
        ("name",),
    ),
    Case(
        "reserved site name 'hub'",
        lambda w: w.admin.post(f"{API}/sites", json={"name": "hub"}),
        (409, 422),
        ("reserved", "hub"),
    ),
    Case(
        "group name of 10 kB", lambda w: w.admin.post(f"{CLF}/groups", json={"name": "g" * 10_000}), (422,), ("name",)
    ),
    Case(
        "70 MiB JSON, unauthenticated",
        lambda w: w.anonymous().post(f"{API}/sites", content=BIG_JSON, headers={"content-type": "application/json"}),
        (401, 413),
        (),
    ),
    Case(
        "70 MiB JSON, authenticated",
        lambda w: w.admin.post(f"{API}/sites", content=BIG_JSON, headers={"content-type": "application/json"}),
        (413,),
        ("large", "limit", "bytes"),
    ),
    Case("classify a JPEG claiming 65000x65000", _classify(_forged_jpeg(65000, 65000)), (413, 422), ("pixel",)),
    Case("classify 300 images in one request", _classify(*[_jpeg(8, 8)] * 300), (400, 413, 422), ("images", "files")),
    Case(
        "classify bytes that are not an image",
        _classify(b"<html>not an image</html>"),
        (415, 422),
        ("image", "decode", "jpeg"),
    ),
    # ------------------------------------------------------------------ web UI forms
    Case(
        "UI: token on the users form",
        lambda w: w.client("fleet_token").post("/ui/users", data={"username": unique("u"), "password": PASSWORD}),
        (403,),
        ("session",),
    ),
    Case(
        "UI: script in a site name",
        lambda w: w.accounts().post("/ui/sites", data={"name": "<script>alert(1)</script>"}),
        (400, 422),
        (),
        ("<script>alert(1)",),
    ),
    Case(
        "UI: token form for another site",
        lambda w: w.client("site_admin_session").post(
            "/ui/tokens", data={"name": "x", "site": "site-b", "role": "viewer"}
        ),
        (403, 404),
        ("site",),
    ),
    # ------------------------------------------------------------------ imports: zip, URL, folder
    Case(
        "zip bomb (300 MiB of zeros)", _zip_import(ZIP_BOMB), (413, 422), ("large", "limit", "bytes", "pixels", "image")
    ),
    Case(
        "zip entry with ../ traversal",
        _zip_import(_zip([("../../evil/dress/x.jpg", _jpeg(8, 8))])),
        (422,),
        ("path", "name", "unsafe", ".."),
    ),
    Case(
        "zip entry with an absolute path",
        _zip_import(_zip([("/etc/dress/x.jpg", _jpeg(8, 8))])),
        (422,),
        ("path", "name", "absolute"),
    ),
    Case(
        "zip symlink entry",
        _zip_import(_zip([(_symlink("dress/link.jpg", "/etc/passwd"), b"/etc/passwd")])),
        (422,),
        ("link",),
    ),
    Case("zip that is not a zip", _zip_import(b"PK\x03\x04 not really"), (422,), ("zip",)),
    Case(
        "URL import: loopback", _url_import("http://127.0.0.1:9/x.jpg"), (422,), ("private", "loopback", "not allowed")
    ),
    Case(
        "URL import: cloud metadata",
        _url_import("http://169.254.169.254/latest/meta-data"),
        (422,),
        ("private", "link-local", "not allowed"),
    ),
    Case(
        "URL import: IPv4-mapped IPv6 loopback",
        _url_import("http://[::ffff:127.0.0.1]/x.jpg"),
        (422,),
        ("private", "loopback", "not allowed"),
    ),
    Case(
        "URL import: NAT64 form of 10.0.0.1",
        _url_import("http://[64:ff9b::a00:1]/x.jpg"),
        (422,),
        ("private", "not allowed"),
    ),
    Case(
        "URL import: 6to4 form of 127.0.0.1",
        _url_import("http://[2002:7f00:1::]/x.jpg"),
        (422,),
        ("private", "not allowed"),
    ),
    Case("URL import: file scheme", _url_import("file:///etc/passwd"), (422,), ("http", "scheme")),
    Case(
        "URL import: localhost name",
        _url_import("http://localhost:9/x.jpg"),
        (422,),
        ("private", "loopback", "not allowed"),
    ),
    Case("folder import outside the roots", _folder_import("/etc"), (403, 422), ("root", "allowed", "outside")),
    Case("folder import with ../", _folder_import("../../../../etc"), (403, 422), ("root", "allowed", "outside")),
    Case("folder import by a labeller token", _folder_import("/tmp", role="labeller_token"), (403,), ("admin",)),
    # ------------------------------------------------------------------ bundles
    Case(
        "default model that is not a zip",
        lambda w: w.admin.put(f"{API}/models/default", files={"file": ("b.zip", b"nope", "application/zip")}),
        (422,),
        ("zip",),
    ),
    Case(
        "result with an unlisted extra file",
        lambda w: w.admin.post(
            f"{API}/jobs/{w.sites['a'].job_id}/result",
            files={"file": ("b.zip", _zip([("manifest.json", b"{}"), ("evil.py", b"1")]), "application/zip")},
        ),
        (404, 409, 422),
        (),
    ),
    Case("agent: bundle of another site", _bundle_scope("site-a", "clf"), (422,), ("site",)),
    Case("agent: bundle of another classifier", _bundle_scope("site-b", "other"), (422,), ("classifier",)),
    # ------------------------------------------------------------------ CLIs
    Case("hub CLI: unknown command", _cli("camfleet_hub", "explode"), (400,), ("invalid choice", "explode")),
    Case(
        "hub CLI: config file missing",
        _cli("camfleet_hub", "--config", "/nonexistent/hub.toml", "migrate"),
        (400,),
        ("nonexistent", "config", "unrecognized"),
    ),
    Case("agent CLI: unknown option", _cli("camfleet_agent", "--bogus-option"), (400,), ("bogus", "usage")),
    # last: it leaves this client address rate-limited for the login window
    Case("login spray with rotating X-Forwarded-For", _login_spray, (429,), ("too many",)),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mosquitto: Any, clothing_subset: Any) -> Iterator[World]:
    """This module's hub: folder imports limited to one root, site A's model promoted (so /classify reaches the
    image checks)."""
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "import-root").mkdir()
    roots = {"roots": [str(tmp / "import-root")]}
    with running_world(tmp, mosquitto, clothing_subset, promote=True, imports=roots) as w:
        yield w


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(world: World, case: Case) -> None:
    before = world.rows(*DATA_TABLES)
    stored = world.store_files()
    r = case.call(world)
    text = r.text if isinstance(r.text, str) else ""
    assert r.status_code in case.statuses, f"{case.name}: {r.status_code} {text[:400]}"
    if case.says:
        assert any(s.lower() in text.lower() for s in case.says), f"{case.name}: refusal does not say why: {text[:400]}"
    for secret in case.never_says:
        assert secret not in text, f"{case.name}: the answer echoes {secret!r}"
    world.alive()
    assert world.rows(*DATA_TABLES) == before, f"{case.name}: rows changed"
    assert world.store_files() == stored, f"{case.name}: the object store changed"


def test_at_least_forty_cases() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


def test_same_origin_form_with_token_still_works(world: World) -> None:
    """The suite's refusals are not a hub that refuses everything: the same calls done right succeed."""
    r = world.accounts().post(f"{API}/sites", json={"name": unique("ok-")}, headers={"Origin": ORIGIN})
    assert r.status_code == 201, r.text
