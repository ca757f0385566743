"""Content-addressed object store on any S3 server (SeaweedFS, MinIO, Ceph RGW, Garage, AWS) through boto3.

Client settings, chosen for an ingest worker that must tell an outage from a slow answer quickly:
path-style addressing (``http://host:port/bucket/key``: no wildcard DNS needed), s3v4 signing, a 2 s connect and
30 s read timeout, and botocore's ``standard`` retry mode with 2 attempts in all (one retry after a short jittered
back-off), so a refused connection surfaces in well under a second instead of hiding behind retries; the ingest
worker has its own retry loop on top. Checksums are computed only where an operation requires them: newer botocore
otherwise sends CRC trailers that several S3-compatible servers reject; integrity comes from the content address
(``get`` callers can hash what they read) and the ``x-amz-checksum-sha256`` sent with every small PUT.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError, PartialCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from camfleet_hub.core.store.base import DEFAULT_PREFIX, ObjectNotFound, object_key, parse_key, sha256_hex

S3Client = Any  # boto3 builds its client classes at run time (typed stubs: the mypy-boto3-s3 package)

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 2  # botocore counts the first try: one retry, then the caller (the ingest worker's loop) decides
POOL_CONNECTIONS = 16  # more than the ingest decode pool's threads, which put a batch's objects concurrently
# Objects at least this large are HEADed first so a duplicate is not uploaded again; smaller ones are just PUT:
# a PUT of content-addressed bytes is idempotent, and a round trip costs more than re-sending ~50 KB.
HEAD_FIRST_BYTES = 1024 * 1024
MULTIPART_BYTES = 8 * 1024 * 1024  # s3transfer's default threshold and part size

_MISSING = {"404", "NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}
# Answers that are the server's or the deployment's fault, never one message's: retry, do not dead-letter.
_INFRASTRUCTURE_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ServiceUnavailable",
    "InternalError",
    "NoSuchBucket",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "XMinioStorageFull",
}


def error_code(exc: ClientError) -> str:
    """The S3 error code of an answer (``NoSuchKey``…), or its HTTP status when the answer had no body (HEAD)."""
    code = exc.response.get("Error", {}).get("Code")
    return str(code or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def is_infrastructure_error(exc: BaseException) -> bool:
    """A botocore error that retrying outlasts: no connection, a timeout, 5xx / 429 / ``SlowDown``, or credentials
    and bucket faults (403, ``NoSuchBucket``) that a redeployment fixes. A 4xx about the request itself (e.g.
    ``EntityTooLarge``) is not."""
    if isinstance(exc, BotoConnectionError | HTTPClientError | NoCredentialsError | PartialCredentialsError):
        return True
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or status in (401, 403, 429) or error_code(exc) in _INFRASTRUCTURE_CODES
    return False


def make_client(
    endpoint: str, access_key: str | None, secret_key: str | None, secure: bool = False, region: str | None = None
) -> S3Client:
    """A boto3 S3 client for ``host:port`` with the settings above (no credentials: boto3's own chain: AWS_*
    variables, profile, instance role)."""
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        max_pool_connections=POOL_CONNECTIONS,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session()  # one per store: boto3's default session is not thread-safe to create from
    return session.client(
        "s3",
        endpoint_url=f"{'https' if secure else 'http'}://{endpoint}",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region or "us-east-1",
        config=config,
    )


class S3Store:
    """Objects as ``<bucket>/<prefix>/ab/cd/<sha256>``; S3 PUT is atomic, so a reader never sees half an object.

    Thread-safe (a boto3 client may be shared by threads): the ingest worker puts a batch's objects concurrently.
    """

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
        self.client = make_client(endpoint, access_key, secret_key, secure, region)
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES, use_threads=False
        )
        self._ensure_bucket(region)

    def _ensure_bucket(self, region: str | None) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":  # us-east-1 is the one region S3 wants no LocationConstraint for
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as exc:
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def __repr__(self) -> str:
        return f"S3Store({self.endpoint!r}, bucket={self.bucket!r})"

    def put(self, data: bytes, prefix: str = DEFAULT_PREFIX) -> str:
        """Upload ``data`` under its hash. Small objects are PUT without a HEAD first: the same key always gets the
        same bytes, so writing it again is harmless (on a versioned bucket it adds a version, which lifecycle rules
        for noncurrent versions expire), and it also re-creates an object that a concurrent delete removed."""
        sha = sha256_hex(data)
        key = object_key(sha, prefix)
        if len(data) >= HEAD_FIRST_BYTES and self.exists(sha, prefix):
            return sha
        if len(data) < MULTIPART_BYTES:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType="application/octet-stream",
                ChecksumSHA256=base64.b64encode(bytes.fromhex(sha)).decode(),
            )
        else:
            self.client.upload_fileobj(
                io.BytesIO(data),
                self.bucket,
                key,
                ExtraArgs={"ContentType": "application/octet-stream"},
                Config=self._transfer,
            )
        return sha

    def get(self, sha: str, prefix: str = DEFAULT_PREFIX) -> bytes:
        """Download an object; ``ObjectNotFound`` when missing."""
        key = object_key(sha, prefix)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                raise ObjectNotFound(f"no object {key!r} in bucket {self.bucket!r}") from None
            raise
        body = response["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def exists(self, sha: str, prefix: str = DEFAULT_PREFIX) -> bool:
        """HEAD the object."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=object_key(sha, prefix))
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                return False
            raise
        return True

    def delete(self, sha: str, prefix: str = DEFAULT_PREFIX) -> None:
        """Remove the object (S3 DELETE of a missing key succeeds)."""
        self.client.delete_object(Bucket=self.bucket, Key=object_key(sha, prefix))

    def iter_objects(self) -> Iterator[tuple[str, str]]:
        """List the bucket (``list_objects_v2`` pages of 1,000); keys that ``object_key`` did not make are skipped."""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                found = parse_key(obj.get("Key", ""))
                if found is not None:
                    yield found
