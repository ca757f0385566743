"""The two ways a model update fails: for good (until a new announcement) or for now (retried)."""

from __future__ import annotations


class ModelUpdateError(Exception):
    """A bundle that must not be used (bad hash, signature, zip, model…): not retried until a new announcement."""


class TransientUpdateError(Exception):
    """The hub or the network failed: the same announcement is retried later with backoff."""
