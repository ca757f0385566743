"""The trainer's error types, in a light module so the CLI can name them without importing torch."""

from __future__ import annotations


class DatasetError(ValueError):
    """The dataset cannot train a classifier; the message says what is missing."""


class BackboneError(RuntimeError):
    """The backbone cannot be built: unknown model, missing weights package, or a checkpoint that does not fit."""


class ExportError(RuntimeError):
    """The exported model does not behave like the torch model; no bundle was written."""
