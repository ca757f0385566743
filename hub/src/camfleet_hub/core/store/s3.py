"""Content-addressed object store on S3 / MinIO through the ``minio`` SDK."""

from __future__ import annotations

import io
from collections.abc import Iterator

from minio import Minio
from minio.error import S3Error

from camfleet_hub.core.store.base import DEFAULT_PREFIX, ObjectNotFound, object_key, parse_key, sha256_hex

_MISSING = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}


class S3Store:
    """Objects as ``<bucket>/<prefix>/ab/cd/<sha256>``; S3 PUT is atomic, so a reader never sees half an object."""

    def __init__(
        self,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        bucket: str,
        secure: bool = False,
        region: str | None = None,
    ) -> None:
        if "://" in endpoint:
            raise ValueError(f"store.endpoint must be host:port without a scheme (use store.secure), got {endpoint!r}")
        self.bucket = bucket
        self.endpoint = endpoint
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)
        if not self.client.bucket_exists(bucket):
            try:
                self.client.make_bucket(bucket, location=region) if region else self.client.make_bucket(bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def __repr__(self) -> str:
        return f"S3Store({self.endpoint!r}, bucket={self.bucket!r})"

    def put(self, data: bytes, prefix: str = DEFAULT_PREFIX) -> str:
        """Upload ``data`` under its hash unless it is already there."""
        sha = sha256_hex(data)
        if not self.exists(sha, prefix):
            self.client.put_object(
                self.bucket,
                object_key(sha, prefix),
                io.BytesIO(data),
                len(data),
                content_type="application/octet-stream",
            )
        return sha

    def get(self, sha: str, prefix: str = DEFAULT_PREFIX) -> bytes:
        """Download an object; ``ObjectNotFound`` when missing."""
        key = object_key(sha, prefix)
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectNotFound(f"no object {key!r} in bucket {self.bucket!r}") from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, sha: str, prefix: str = DEFAULT_PREFIX) -> bool:
        """HEAD the object."""
        try:
            self.client.stat_object(self.bucket, object_key(sha, prefix))
        except S3Error as exc:
            if exc.code in _MISSING:
                return False
            raise
        return True

    def delete(self, sha: str, prefix: str = DEFAULT_PREFIX) -> None:
        """Remove the object (S3 DELETE of a missing key succeeds)."""
        self.client.remove_object(self.bucket, object_key(sha, prefix))

    def iter_objects(self) -> Iterator[tuple[str, str]]:
        """List the bucket (paged by the SDK); keys that ``object_key`` did not make are skipped."""
        for obj in self.client.list_objects(self.bucket, recursive=True):
            found = parse_key(obj.object_name or "")
            if found is not None:
                yield found
