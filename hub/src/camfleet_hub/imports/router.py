"""Import jobs: start one from a zip, uploaded files, a URL list, a server folder or a web search; follow it."""

from __future__ import annotations

from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from camfleet_hub.auth.deps import CurrentUserDep, SiteLabellerDep, SiteViewerDep, require_in_classifier
from camfleet_hub.auth.models import Role
from camfleet_hub.auth.principal import Principal
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import InvalidError, TooLargeError
from camfleet_hub.core.http_errors import invalid_from
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Classifier
from camfleet_hub.imports import jobs as import_jobs
from camfleet_hub.imports import search, staging
from camfleet_hub.imports.models import ImportKind, ImportOutcome
from camfleet_hub.imports.schemas import (
    ImportItemsPage,
    ImportJobPublic,
    ImportRequest,
    ImportSearch,
    SearchResultPublic,
)
from camfleet_hub.imports.sources import resolve_import_root

router = APIRouter(tags=["imports"])

MAX_FORM_FILES = staging.MAX_UPLOAD_FILES
WAIT_S = 3600.0
FORM_OVERHEAD = 1024 * 1024  # multipart boundaries and headers around the files

BODIES: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "a zip, folder per class"},
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "image files (browser upload)",
                        },
                        "group": {"type": "string", "description": "put every image in this group"},
                    },
                }
            },
            "application/json": {"schema": ImportRequest.model_json_schema()},
        },
    }
}


async def _from_form(request: Request, services: Any, session: Any, classifier: Classifier, user: Principal) -> Any:
    form = await request.form(max_files=MAX_FORM_FILES, max_fields=8)
    try:
        group_field = form.get("group")
        group = group_field.strip() or None if isinstance(group_field, str) else None
        zipped = form.get("file")
        uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if isinstance(zipped, UploadFile) and not uploads:
            token, total = await run_in_threadpool(staging.stage_zip, services, zipped.file)
            params: dict[str, Any] = {"staging": token, "file": zipped.filename or "upload.zip"}
            kind = ImportKind.ZIP
        elif uploads and zipped is None:
            files: list[tuple[str, BinaryIO]] = [(f.filename or f"file-{i}", f.file) for i, f in enumerate(uploads)]
            token = await run_in_threadpool(staging.stage_files, services, files)
            total = len(files)
            params = {"staging": token, "names": [name for name, _ in files]}
            kind = ImportKind.UPLOAD
        else:
            raise InvalidError("file: send one zip as the multipart field 'file', or images as the fields 'files'")
    finally:
        await form.close()
    return await run_in_threadpool(
        import_jobs.create_job, services, session, classifier, kind, user.name, group, params, total
    )


def _from_json(services: Any, session: Any, classifier: Classifier, body: ImportRequest, user: Principal) -> Any:
    params: dict[str, Any]
    given = [name for name in ("urls", "path", "search") if getattr(body, name) is not None]
    if len(given) != 1:
        raise InvalidError(f"body: give exactly one of 'urls', 'path' or 'search', got {given or 'none'}")
    if body.path is not None:
        user.require_admin()  # the hub's own disk: hub administrators only
        root = resolve_import_root(body.path, import_jobs.allowed_roots(services))
        kind, params = ImportKind.FOLDER, {"path": str(root)}
    elif body.urls is not None:
        kind, params = ImportKind.URLS, {"urls": import_jobs.check_urls(body.urls)}
    else:
        assert body.search is not None
        kind, params = ImportKind.SEARCH, {"term": body.search.term, "urls": _search_urls(services, body.search)}
    return import_jobs.create_job(
        services, session, classifier, kind, user.name, body.group, params, len(params.get("urls", []))
    )


def _search_urls(services: Any, wanted: ImportSearch) -> list[str]:
    if wanted.urls is not None:
        return import_jobs.check_urls(wanted.urls)
    found = search.search(services.settings.imports, wanted.term, wanted.count)
    return import_jobs.check_urls([r.image_url for r in found])


@router.post(
    "/sites/{site}/classifiers/{clf}/import",
    operation_id="import_images",
    response_model=ImportJobPublic,
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=BODIES,
    responses={200: {"model": ImportJobPublic, "description": "with ?wait=true: the finished job"}},
)
async def import_images(
    site: str,
    clf: str,
    request: Request,
    response: Response,
    session: SessionDep,
    services: ServicesDep,
    user: SiteLabellerDep,
    wait: Annotated[bool, Query(description="block until the job is finished and return it (scripts)")] = False,
) -> ImportJobPublic:
    """Start an import job (202); multipart ``file`` (zip) or ``files``, or JSON ``urls`` / ``path`` / ``search``."""
    classifier = await run_in_threadpool(crud.get_classifier, session, site, clf)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        declared, limit = request.headers.get("content-length", ""), services.settings.imports.max_upload_bytes
        if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:  # refuse before spooling it to disk
            raise TooLargeError(f"upload of {declared} bytes exceeds imports.max_upload_bytes={limit}")
        job = await _from_form(request, services, session, classifier, user)
    elif ctype.startswith("application/json"):
        try:
            body = ImportRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise invalid_from(exc) from None
        job = await run_in_threadpool(_from_json, services, session, classifier, body, user)
    else:
        raise InvalidError(
            f"content-type={ctype!r}: send multipart/form-data ('file' zip or 'files'), "
            'or JSON {"urls": [...]} / {"path": ...} / {"search": {...}}'
        )
    if wait:
        worker = import_jobs.services_worker(services)
        await run_in_threadpool(worker.wait, job.id, WAIT_S)
        response.status_code = status.HTTP_200_OK
    session.expire_all()
    job = await run_in_threadpool(import_jobs.get_job, session, job.id)
    return await run_in_threadpool(import_jobs.job_view, session, job)


@router.get(
    "/sites/{site}/classifiers/{clf}/imports", operation_id="list_import_jobs", response_model=list[ImportJobPublic]
)
def list_import_jobs(
    site: str,
    clf: str,
    session: SessionDep,
    _user: SiteViewerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[ImportJobPublic]:
    classifier = crud.get_classifier(session, site, clf)
    return [import_jobs.job_view(session, job) for job in import_jobs.list_jobs(session, classifier, limit, offset)]


@router.get("/imports/{job_id}", operation_id="get_import_job", response_model=ImportJobPublic)
def get_import_job(job_id: int, session: SessionDep, user: CurrentUserDep) -> ImportJobPublic:
    job = import_jobs.get_job(session, job_id)
    require_in_classifier(user, session, job.classifier_id, Role.VIEWER)
    return import_jobs.job_view(session, job)


@router.get("/imports/{job_id}/items", operation_id="list_import_items", response_model=ImportItemsPage)
def list_import_items(
    job_id: int,
    session: SessionDep,
    user: CurrentUserDep,
    outcome: ImportOutcome | None = None,
    after: Annotated[int, Query(ge=0, description="the last item id of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=import_jobs.MAX_ITEMS_PAGE)] = 100,
) -> ImportItemsPage:
    job = import_jobs.get_job(session, job_id)
    require_in_classifier(user, session, job.classifier_id, Role.VIEWER)
    items, total = import_jobs.list_items(session, job, outcome, limit, after)
    next_after = items[-1].id if len(items) == limit else None
    return ImportItemsPage(items=[import_jobs.item_view(i) for i in items], total=total, next_after=next_after)


@router.post("/imports/{job_id}/cancel", operation_id="cancel_import_job", response_model=ImportJobPublic)
def cancel_import_job(job_id: int, session: SessionDep, user: CurrentUserDep) -> ImportJobPublic:
    """Stop the job between two files; what was imported stays. A finished job is returned unchanged."""
    job = import_jobs.get_job(session, job_id)
    require_in_classifier(user, session, job.classifier_id, Role.LABELLER)
    return import_jobs.job_view(session, import_jobs.cancel(session, job))


@router.get(
    "/sites/{site}/classifiers/{clf}/search", operation_id="search_images", response_model=list[SearchResultPublic]
)
def search_images(
    site: str,
    clf: str,
    session: SessionDep,
    services: ServicesDep,
    _user: SiteLabellerDep,
    q: Annotated[str, Query(min_length=1, max_length=search.MAX_TERM)],
    count: Annotated[int, Query(ge=1, le=search.MAX_RESULTS)] = 20,
) -> list[SearchResultPublic]:
    """Web image search with the configured provider (503 with a plain message when none is configured)."""
    crud.get_classifier(session, site, clf)
    return [SearchResultPublic.model_validate(r.as_dict()) for r in search.search(services.settings.imports, q, count)]
