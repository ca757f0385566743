"""Import a folder-per-class dataset: a zip upload (multipart ``file``) or a server folder (JSON ``{"path"}``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from camfleet_hub.api.deps import CurrentUserDep, ServicesDep, SessionDep
from camfleet_hub.api.errors import invalid_from
from camfleet_hub.schemas import ImportFromPath, ImportResult
from camfleet_hub.services import crud
from camfleet_hub.services.errors import InvalidError
from camfleet_hub.services.imports import ImportLimits, import_folder, import_zip

router = APIRouter(tags=["images"])

BODIES: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "zip, folder per class"}
                    },
                }
            },
            "application/json": {"schema": ImportFromPath.model_json_schema()},
        },
    }
}


def limits_from(services: Any) -> ImportLimits:
    return ImportLimits(max_pixels=services.settings.ingest.max_pixels)


def allowed_roots(services: Any) -> list[Path] | None:
    """Folders a server-side import may read from (``imports.roots`` once the settings have it; else any)."""
    roots = getattr(getattr(services.settings, "imports", None), "roots", None)
    return [Path(r) for r in roots] if roots else None


@router.post(
    "/sites/{site}/classifiers/{clf}/import",
    operation_id="import_images",
    response_model=ImportResult,
    openapi_extra=BODIES,
)
async def import_images(
    site: str, clf: str, request: Request, session: SessionDep, services: ServicesDep, _user: CurrentUserDep
) -> ImportResult:
    classifier = await run_in_threadpool(crud.get_classifier, session, site, clf)
    limits = limits_from(services)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=4)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidError("file: send the zip as the multipart field 'file'")
            report = await run_in_threadpool(import_zip, session, services.store, classifier, upload.file, limits)
        finally:
            await form.close()
    elif ctype.startswith("application/json"):
        try:
            body = ImportFromPath.model_validate_json(await request.body())
        except ValidationError as exc:
            raise invalid_from(exc) from None
        report = await run_in_threadpool(
            import_folder, session, services.store, classifier, body.path, limits, allowed_roots(services)
        )
    else:
        raise InvalidError(
            f"content-type={ctype!r}: send multipart/form-data with a zip 'file', or JSON {{\"path\": ...}}"
        )
    return ImportResult.model_validate(report.as_dict())
