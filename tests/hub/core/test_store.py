"""Both object stores pass the same contract: content addressing, idempotent put, missing keys, prefixes."""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError

from camfleet_hub.core.config import StoreSettings
from camfleet_hub.core.store import DirectoryStore, ObjectNotFound, ObjectStore, S3Store, make_store, object_key
from camfleet_hub.core.store.s3 import HEAD_FIRST_BYTES, error_code, make_client
from camfleet_hub.ingest.batch import infrastructure_error
from tests.reliability.tcpproxy import TcpProxy

if TYPE_CHECKING:
    from tests.conftest import S3Server


# Two S3 implementations: moto (what boto3 is tested against) and SeaweedFS (what docker-compose runs).
S3_SERVERS = {"moto": "s3", "seaweedfs": "seaweedfs"}


@pytest.fixture(params=sorted(S3_SERVERS))
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    return request.getfixturevalue(S3_SERVERS[request.param])  # type: ignore[no-any-return]


@pytest.fixture(params=["dir", *sorted(S3_SERVERS)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "dir":
        yield make_store(StoreSettings(kind="dir", path="objects"), base_dir=tmp_path)
        return
    s3 = request.getfixturevalue(S3_SERVERS[request.param])
    settings = StoreSettings(
        kind="s3",
        endpoint=s3.endpoint,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        bucket=s3.new_bucket(),
        region=s3.region,
    )
    yield make_store(settings)


def test_put_get_is_content_addressed(store: ObjectStore, jpegs: list[bytes]) -> None:
    data = jpegs[0]
    sha = store.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.exists(sha)
    assert store.get(sha) == data


def test_put_is_idempotent(store: ObjectStore, jpegs: list[bytes]) -> None:
    first = store.put(jpegs[1])
    second = store.put(jpegs[1])
    assert first == second
    assert store.get(first) == jpegs[1]


def test_missing_object(store: ObjectStore) -> None:
    sha = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(sha)
    with pytest.raises(ObjectNotFound):
        store.get(sha)
    with pytest.raises(KeyError):  # ObjectNotFound is a KeyError
        store.get(sha)
    store.delete(sha)  # deleting what is not there is fine


def test_prefixes_are_separate(store: ObjectStore) -> None:
    sha = store.put(b"dead letter payload", prefix="dead")
    assert store.exists(sha, prefix="dead")
    assert not store.exists(sha)
    with pytest.raises(ObjectNotFound):
        store.get(sha)
    assert store.get(sha, prefix="dead") == b"dead letter payload"


def test_delete(store: ObjectStore) -> None:
    sha = store.put(b"short-lived")
    store.delete(sha)
    assert not store.exists(sha)
    with pytest.raises(ObjectNotFound):
        store.get(sha)


def test_empty_object(store: ObjectStore) -> None:
    sha = store.put(b"")
    assert store.get(sha) == b""


@pytest.mark.parametrize("sha", ["../../etc/passwd", "AB" * 32, "ab" * 31, ""])
def test_bad_keys_are_refused(store: ObjectStore, sha: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        store.get(sha)


def test_bad_prefix_is_refused(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="prefix"):
        store.put(b"x", prefix="../up")


def test_directory_layout_and_no_temp_files(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "objects")
    sha = store.put(b"hello")
    assert (tmp_path / "objects" / object_key(sha)).read_bytes() == b"hello"
    assert object_key(sha) == f"blobs/{sha[:2]}/{sha[2:4]}/{sha}"
    leftovers = [p for p in (tmp_path / "objects").rglob("*") if p.is_file() and p.name.startswith(".tmp-")]
    assert leftovers == []


def _bucket_exists(s3: S3Server, name: str) -> bool:
    try:
        make_client(s3.endpoint, s3.access_key, s3.secret_key, region=s3.region).head_bucket(Bucket=name)
    except ClientError as exc:
        if error_code(exc) == "404":
            return False
        raise
    return True


def test_s3_creates_missing_bucket(s3_server: S3Server) -> None:
    s3 = s3_server
    name = f"cf-new-{uuid.uuid4().hex[:12]}"
    assert not _bucket_exists(s3, name)
    store = S3Store(s3.endpoint, s3.access_key, s3.secret_key, name, region=s3.region)
    assert _bucket_exists(s3, name)
    assert store.get(store.put(b"x")) == b"x"
    again = S3Store(s3.endpoint, s3.access_key, s3.secret_key, name, region=s3.region)  # existing bucket: fine
    assert list(again.iter_objects()) == list(store.iter_objects())


def _s3_store(s3: S3Server, endpoint: str | None = None) -> S3Store:
    return S3Store(endpoint or s3.endpoint, s3.access_key, s3.secret_key, s3.new_bucket(), region=s3.region)


def test_s3_large_object_goes_multipart(s3_server: S3Server) -> None:
    # Over the 8 MiB multipart threshold, so the upload is multipart with a short last part (and HEADed first).
    data = random.Random(15).randbytes(12 * 1024 * 1024 + 12345)
    store = _s3_store(s3_server)
    sha = store.put(data)
    assert store.get(sha) == data
    assert list(store.iter_objects()) == [("blobs", sha)]


def test_s3_listing_skips_foreign_keys(s3_server: S3Server) -> None:
    store = _s3_store(s3_server)
    sha = store.put(b"ours")
    for key in ("blobs/readme.txt", f"blobs/zz/zz/{sha}", f"other/{sha}", f"blobs/{sha[:2]}/{sha[2:4]}/{sha}.tmp"):
        store.client.put_object(Bucket=store.bucket, Key=key, Body=b"foreign")
    assert list(store.iter_objects()) == [("blobs", sha)]


def test_s3_listing_pages(s3_server: S3Server) -> None:
    # More keys than one list_objects_v2 page (1,000), so the paginator's continuation is used.
    store = _s3_store(s3_server)
    shas = {store.put(f"object {i}".encode()) for i in range(1005)}
    assert sorted(store.iter_objects()) == sorted(("blobs", s) for s in shas)


def test_s3_put_over_an_existing_object_keeps_it_whole(s3_server: S3Server) -> None:
    # Small objects are PUT without a HEAD first; writing the same key again must leave the same bytes (and a
    # large one, HEADed first, is not uploaded again).
    store = _s3_store(s3_server)
    small, large = b"small and content-addressed", random.Random(3).randbytes(HEAD_FIRST_BYTES + 1)
    for data in (small, small, large, large):
        assert store.get(store.put(data)) == data
    assert sorted(store.iter_objects()) == sorted([("blobs", store.put(small)), ("blobs", store.put(large))])


def test_s3_wrong_secret_is_an_error_not_a_missing_object(s3_server: S3Server) -> None:
    if s3_server.kind == "moto":
        pytest.skip("moto accepts any signature")
    store = _s3_store(s3_server)
    sha = store.put(b"guarded")
    forged = S3Store.__new__(S3Store)  # skip __init__'s bucket check, which would already fail
    forged.bucket, forged.endpoint = store.bucket, store.endpoint
    forged.client = make_client(store.endpoint, s3_server.access_key, "wrong", region=s3_server.region)
    # A HEAD answer has no body to name the error: its code is the HTTP status.
    with pytest.raises(ClientError) as head:
        forged.exists(sha)
    assert error_code(head.value) == "403"
    with pytest.raises(ClientError) as got:
        forged.get(sha)
    assert error_code(got.value) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as put:
        forged.put(b"not allowed")
    assert error_code(put.value) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as made:
        S3Store(store.endpoint, s3_server.access_key, "wrong", store.bucket, region=s3_server.region)
    assert error_code(made.value) == "403"
    # The deployment's fault, not a message's: the ingest worker retries instead of dead-lettering frames.
    assert all(infrastructure_error(e.value) for e in (head, got, put, made))


def test_s3_server_down_is_a_retryable_error_then_recovers(s3_server: S3Server) -> None:
    host, port = s3_server.endpoint.split(":")
    with TcpProxy(host, int(port)) as proxy:
        store = _s3_store(s3_server, endpoint=proxy.endpoint)
        kept = store.put(b"before the outage")
        proxy.cut()
        # Not False / ObjectNotFound: a down server must not look like a missing object (the ingest would
        # re-upload or drop); it is an error the ingest worker retries.
        # (botocore's standard retry mode with 2 attempts: each call gives up after one short back-off)
        for name, call in (
            ("exists", lambda: store.exists(kept)),
            ("get", lambda: store.get(kept)),
            ("put", lambda: store.put(b"during the outage")),
        ):
            started = time.perf_counter()
            with pytest.raises(Exception) as caught:
                call()
            # Printed, not asserted (no timing assertions): docs/ARCHITECTURE.md quotes it (pytest -s).
            print(f"{s3_server.kind}: {name} during the outage failed after {time.perf_counter() - started:.2f} s")
            assert not isinstance(caught.value, ObjectNotFound)
            assert infrastructure_error(caught.value), repr(caught.value)
        proxy.restore()
        assert store.get(kept) == b"before the outage"
        assert store.get(store.put(b"after the outage")) == b"after the outage"


def test_s3_error_classes() -> None:
    def answer(status: int, code: str) -> ClientError:
        body = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(body, "PutObject")  # type: ignore[arg-type]

    for status, code in [(503, "SlowDown"), (500, "InternalError"), (503, ""), (403, "AccessDenied")]:
        assert infrastructure_error(answer(status, code)), (status, code)
    for status, code in [(400, "EntityTooLarge"), (400, "InvalidArgument")]:
        assert not infrastructure_error(answer(status, code)), (status, code)


def test_s3_endpoint_with_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="store.endpoint"):
        S3Store("http://127.0.0.1:9000", "a", "b", "bucket")


def test_iter_objects_lists_every_object_once(store: ObjectStore, jpegs: list[bytes]) -> None:
    shas = {store.put(j) for j in jpegs[:3]}
    dead = store.put(b"dead payload", "dead")
    listed = list(store.iter_objects())
    assert sorted(listed) == sorted({("blobs", s) for s in shas} | {("dead", dead)})
