"""Object stores (directory, S3) behind one small interface, and the factory that picks one from settings."""

from camfleet_hub.core.store.base import (
    DEAD_PREFIX,
    DEFAULT_PREFIX,
    ObjectNotFound,
    ObjectStore,
    object_key,
    sha256_hex,
)
from camfleet_hub.core.store.directory import DirectoryStore
from camfleet_hub.core.store.factory import make_store
from camfleet_hub.core.store.s3 import S3Store

__all__ = [
    "DEAD_PREFIX",
    "DEFAULT_PREFIX",
    "DirectoryStore",
    "ObjectNotFound",
    "ObjectStore",
    "S3Store",
    "make_store",
    "object_key",
    "sha256_hex",
]
