"""Staging what an import request carried (an uploaded zip or files) under ``<data_dir>/imports/<token>/``.

The job records the staging token in its params; the worker reads the files from there and removes the folder
when the job ends (``worker.ImportWorker``).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from camfleet_hub.core.errors import InvalidError, TooLargeError
from camfleet_hub.imports.sources import count_zip_entries

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubCore

STAGING = "imports"
ZIP_NAME = "upload.zip"
FILES_DIR = "files"
MAX_UPLOAD_FILES = 10_000
COPY_CHUNK = 1024 * 1024


def staging_dir(services: HubCore, token: str) -> Path:
    return services.settings.resolve(STAGING) / token


def new_staging(services: HubCore) -> tuple[str, Path]:
    token = uuid.uuid4().hex
    folder = staging_dir(services, token)
    folder.mkdir(parents=True)
    return token, folder


def _copy(src: BinaryIO, dest: Path, budget: int) -> int:
    """Copy a spooled upload to ``dest``; raises TooLargeError past ``budget`` bytes."""
    src.seek(0)
    written = 0
    with open(dest, "wb") as out:
        while chunk := src.read(COPY_CHUNK):
            written += len(chunk)
            if written > budget:
                raise TooLargeError(f"upload exceeds the limit of imports.max_upload_bytes={budget} bytes")
            out.write(chunk)
    return written


def stage_zip(services: HubCore, fileobj: BinaryIO) -> tuple[str, int]:
    """Keep an uploaded zip for the job; (staging token, files in it). Raises for an unreadable or huge one."""
    token, folder = new_staging(services)
    try:
        _copy(fileobj, folder / ZIP_NAME, services.settings.imports.max_upload_bytes)
        with open(folder / ZIP_NAME, "rb") as fh:
            total = count_zip_entries(fh)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return token, total


def stage_files(services: HubCore, files: list[tuple[str, BinaryIO]]) -> str:
    """Keep browser-uploaded files (as ``files/<index>``, names kept by the job) for the job."""
    if not files:
        raise InvalidError("files: send at least one file")
    if len(files) > MAX_UPLOAD_FILES:
        raise TooLargeError(f"files: {len(files)} files in one upload, over the limit of {MAX_UPLOAD_FILES}")
    token, folder = new_staging(services)
    budget = services.settings.imports.max_upload_bytes
    try:
        (folder / FILES_DIR).mkdir()
        for i, (_name, fh) in enumerate(files):
            budget -= _copy(fh, folder / FILES_DIR / str(i), budget)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return token
