"""Object stores (directory, S3) behind one small interface, and the factory that picks one from settings."""

from camfleet_hub.store.base import DEAD_PREFIX, DEFAULT_PREFIX, ObjectNotFound, ObjectStore, object_key, sha256_hex
from camfleet_hub.store.factory import make_store

__all__ = [
    "DEAD_PREFIX",
    "DEFAULT_PREFIX",
    "ObjectNotFound",
    "ObjectStore",
    "make_store",
    "object_key",
    "sha256_hex",
]
