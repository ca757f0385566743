"""Both object stores pass the same contract: content addressing, idempotent put, missing keys, prefixes."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from camfleet_hub.config import StoreSettings
from camfleet_hub.store import DirectoryStore, ObjectNotFound, ObjectStore, S3Store, make_store, object_key


@pytest.fixture(params=["dir", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "dir":
        yield make_store(StoreSettings(kind="dir", path="objects"), base_dir=tmp_path)
        return
    s3 = request.getfixturevalue("s3")
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


def test_s3_creates_missing_bucket(s3) -> None:  # type: ignore[no-untyped-def]
    name = f"cf-new-{uuid.uuid4().hex[:12]}"
    store = S3Store(s3.endpoint, s3.access_key, s3.secret_key, name, region=s3.region)
    assert s3.client().bucket_exists(name)
    assert store.get(store.put(b"x")) == b"x"
    S3Store(s3.endpoint, s3.access_key, s3.secret_key, name, region=s3.region)  # existing bucket: fine


def test_s3_endpoint_with_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="store.endpoint"):
        S3Store("http://127.0.0.1:9000", "a", "b", "bucket")


def test_iter_objects_lists_every_object_once(store: ObjectStore, jpegs: list[bytes]) -> None:
    shas = {store.put(j) for j in jpegs[:3]}
    dead = store.put(b"dead payload", "dead")
    listed = list(store.iter_objects())
    assert sorted(listed) == sorted({("blobs", s) for s in shas} | {("dead", dead)})
