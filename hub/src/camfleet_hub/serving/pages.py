"""Serving pages: Try it (``/ui/try``), Analysis of one image, Outliers, the Errors view's bulk form, and a site's
prediction Logs with CSV export.

Pages call the same services as the REST routes (``serving.analyse``, ``services.curation``); the Try page's
script posts to ``/ui/try/classify`` (JSON) and adds to a dataset through the REST import API.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from camfleet_contract.images import ImageError, probe_image
from camfleet_hub.auth.deps import CurrentUserDep, SiteLabellerDep, SiteViewerDep, visible_site_ids
from camfleet_hub.auth.models import Role
from camfleet_hub.core import urls
from camfleet_hub.core.container import HubServices
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import InvalidError, NotFoundError, ServiceError, UnavailableError
from camfleet_hub.core.store.base import ObjectNotFound
from camfleet_hub.datasets import crud, image_changes
from camfleet_hub.datasets import page_data as cp
from camfleet_hub.datasets.models import Classifier, Frame, Site
from camfleet_hub.imports.fetch import FetchError, fetch
from camfleet_hub.imports.jobs import fetch_limits
from camfleet_hub.serving import analyse as analysis
from camfleet_hub.serving import classify as clf_service
from camfleet_hub.serving import logs, outliers
from camfleet_hub.serving.schemas import DEFAULT_NEIGHBOURS, MAX_NEIGHBOURS
from camfleet_hub.serving.service import LogContext, log_predictions, score_images
from camfleet_hub.training import announce
from camfleet_hub.training import page_data as pages
from camfleet_hub.web.render import page_path, render

router = APIRouter(include_in_schema=False)

CLF = "/ui/sites/{site}/classifiers/{clf}"
TRY_TOP = 5
IMAGENET = ""  # the Try page's value for the ImageNet default


# ------------------------------------------------------------------------------------------------------ Try it


def _visible_classifiers(session: SessionDep, user: Any) -> list[dict[str, Any]]:
    ids = visible_site_ids(user, session)
    query = select(Classifier).join(Site, Site.id == Classifier.site_id).order_by(Site.name, Classifier.name)
    if ids is not None:
        query = query.where(Classifier.site_id.in_(ids))
    out = []
    for c in session.scalars(query):
        role = user.role_in(c.site_id)
        out.append(
            {
                "value": f"{c.site.name}/{c.name}",
                "site": c.site.name,
                "clf": c.name,
                "can_label": role is not None and role.rank >= Role.LABELLER.rank,
                "groups": [g.name for g in crud.list_groups(session, c)],
            }
        )
    return out


@router.get("/ui/try", response_class=HTMLResponse, name="serving.try")
def try_page(request: Request, session: SessionDep, user: CurrentUserDep) -> HTMLResponse:
    """Upload, paste, webcam or drawing → top-5 of the ImageNet default or a visible classifier."""
    return render(request, "serving/try.html", {"classifiers": _visible_classifiers(session, user), "top": TRY_TOP})


def _score(
    services: Any, session: Any, cache: clf_service.RuntimeCache, classifier: Classifier | None, image: Any
) -> tuple[Any, bool, Any, Any]:
    """(model, is_default, runtime, scored) for one image; the ImageNet default when ``classifier`` is None."""
    limits = services.settings.classify
    clf_service.check_request([image], limits)
    if classifier is None:
        model = announce.default_model(session)
        if model is None:
            raise UnavailableError("no ImageNet default model: upload one with PUT /api/v1/models/default")
        is_default = True
    else:
        model, is_default = clf_service.choose_model(session, classifier)
    runtime = cache.get(model)
    spec = runtime.manifest.preprocessing
    side = max(spec.resize, spec.size)
    clf_service.check_pixels([image], limits, side)
    try:
        decoded = clf_service.decode_bounded(image.data, limits.max_image_pixels, side)
    except Exception as exc:  # ImageError and PIL's own: a bad image is the caller's 422
        raise InvalidError(f"file ({image.name}): {exc}") from None
    return model, is_default, runtime, score_images(runtime, [decoded])[0]


@router.post("/ui/try/classify", response_model=None, name="serving.try_classify")
async def try_classify(
    request: Request, session: SessionDep, services: ServicesDep, user: CurrentUserDep
) -> JSONResponse:
    """Multipart ``file`` and ``target`` ('' = ImageNet default, else 'site/classifier') → top-5, anomaly flag.
    A site classifier's prediction is logged (route 'try') like REST classify."""
    limits = services.settings.classify
    services.runtimes.slots.acquire()
    try:
        form = await request.form(max_files=2, max_fields=4)
        try:
            upload = form.get("file")
            target = form.get("target")
            if target is not None and not isinstance(target, str):
                raise InvalidError("target: expected text ('' or 'site/classifier')")
            image = None
            if isinstance(upload, UploadFile):
                data = await upload.read(limits.max_image_bytes + 1)
                image = clf_service.NamedImage(upload.filename or "file", data)
        finally:
            await form.close()

        def run() -> dict[str, Any]:
            classifier = None
            if target:
                site, _, name = target.partition("/")
                if not name:
                    raise InvalidError(f"target={target!r}: expected 'site/classifier' or '' for the ImageNet default")
                classifier = crud.get_classifier(session, site, name)
                user.require(classifier.site_id, Role.VIEWER, site)
            if image is None:  # after the role check: a caller learns nothing of a site it cannot see
                raise InvalidError("file: missing multipart file field 'file'")
            model, is_default, runtime, scored = _score(services, session, services.runtimes, classifier, image)
            shown = runtime.manifest.classifier if is_default or classifier is None else classifier.name
            if classifier is not None:
                ctx = LogContext(classifier.site_id, shown, model.id, model.version, user.name, "try")
                log_predictions(session, ctx, [image.name], [scored])
                session.commit()
            return {
                "model": {"id": model.id, "classifier": shown, "version": model.version, "default": is_default},
                "top": [{"label": g, "probability": p} for g, p in list(scored.probabilities.items())[:TRY_TOP]],
                "anomaly": scored.anomaly,
                "anomaly_score": scored.anomaly_score,
                "threshold": scored.threshold,
            }

        return JSONResponse(await run_in_threadpool(run))
    finally:
        services.runtimes.slots.release()


# ---------------------------------------------------------------------------------------------------- Analysis


def _bars(probabilities: list[dict[str, Any]]) -> str:
    """Every group's probability as horizontal SVG bars (most likely first), like ``curation_pages.bar_chart``."""
    from html import escape

    bar_h, gap, left, width, top = 18, 6, 150, 560, 6
    height = top + len(probabilities) * (bar_h + gap) + 4
    scale = width - left - 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="bars" id="prob-chart" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="probability of every group">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
    ]
    for i, p in enumerate(probabilities):
        y = top + i * (bar_h + gap)
        w = max(p["probability"] * scale, 0.5)
        colour = "#2563eb" if i == 0 else "#93c5fd"
        parts.append(
            f'<text x="{left - 6}" y="{y + 13}" font-size="12" text-anchor="end" fill="#1d2327">'
            f"{escape(p['group'][:22])}</text>"
            f'<rect class="bar" x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}" rx="3">'
            f"<title>{escape(p['group'])}: {p['probability']:.1%}</title></rect>"
            f'<text x="{left + w + 5:.1f}" y="{y + 13}" font-size="12" fill="#6b7280">{p["probability"]:.1%}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _analysis_view(
    request: Request,
    session: Any,
    classifier: Classifier,
    k: int,
    answer: Any = None,
    source: dict[str, Any] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    context: dict[str, Any] = {**cp.base(classifier), "k": k, "max_k": MAX_NEIGHBOURS, "error": error}
    context["source"] = source or {}
    if answer is not None:
        data = answer.model_dump()
        analyse = page_path(request, "serving.analyse", site=classifier.site.name, clf=classifier.name)
        for n in data["neighbours"]:
            n["page_url"] = page_path(request, "ui.image", image_id=n["image_id"])
            n["analyse_url"] = f"{analyse}?image_id={n['image_id']}&k={k}"
        context["a"] = data
        context["chart"] = _bars(data["probabilities"])
    scope = {"site": classifier.site.name, "clf": classifier.name}
    return render(request, "serving/analyse.html", context, status_code, **scope)


def _frame_image(services: Any, session: Any, classifier: Classifier, frame_id: str) -> clf_service.NamedImage:
    frame = session.scalar(select(Frame).where(Frame.frame_id == frame_id, Frame.site_id == classifier.site_id))
    if frame is None:
        raise NotFoundError(f"frame_id={frame_id!r}: no such frame in site {classifier.site.name!r}")
    try:
        return clf_service.NamedImage(f"frame {frame_id}", services.store.get(frame.sha256))
    except ObjectNotFound:
        raise NotFoundError(f"frame_id={frame_id!r}: its file is missing from the store") from None


async def _run_analysis(
    services: HubServices, session: Session, classifier: Classifier, upload: Any, image_id: int | None, k: int
) -> Any:
    services.runtimes.slots.acquire()
    try:
        return await run_in_threadpool(
            analysis.analyse, services, session, services.runtimes, classifier, upload, image_id, k
        )
    finally:
        services.runtimes.slots.release()


@router.get(CLF + "/analyse", response_class=HTMLResponse, name="serving.analyse")
async def analyse_page(
    request: Request,
    site: str,
    clf: str,
    session: SessionDep,
    services: ServicesDep,
    _user: SiteViewerDep,
    image_id: Annotated[int | None, Query(ge=1, lt=2**63)] = None,
    frame_id: Annotated[str | None, Query(max_length=64)] = None,
    k: Annotated[int, Query(ge=1, le=MAX_NEIGHBOURS)] = DEFAULT_NEIGHBOURS,
) -> HTMLResponse:
    """A dataset image (``image_id``) or a camera frame (``frame_id``) analysed; neither: the upload form only."""
    classifier = await run_in_threadpool(crud.get_classifier, session, site, clf)
    if image_id is None and not frame_id:
        return _analysis_view(request, session, classifier, k)
    upload = None
    source: dict[str, Any] = {}
    try:
        if image_id is not None:
            source = {
                "image_id": image_id,
                "src": urls.image_thumbnail(image_id),
                "page": page_path(request, "ui.image", image_id=image_id),
            }
        else:
            assert frame_id is not None
            upload = await run_in_threadpool(_frame_image, services, session, classifier, frame_id)
            source = {"frame_id": frame_id, "src": f"{urls.API_PREFIX}/frames/{frame_id}/thumbnail"}
        answer = await _run_analysis(services, session, classifier, upload, image_id, k)
    except ServiceError as exc:
        return _analysis_view(request, session, classifier, k, None, source, exc.detail, exc.status_code)
    return _analysis_view(request, session, classifier, k, answer, source)


@router.post(CLF + "/analyse", response_class=HTMLResponse, name="serving.analyse_upload")
async def analyse_upload(
    request: Request,
    site: str,
    clf: str,
    session: SessionDep,
    services: ServicesDep,
    _user: SiteViewerDep,
) -> HTMLResponse:
    """The Analysis page's form: an uploaded image (``file``) or an http(s) ``url`` (through the URL guard)."""
    classifier = await run_in_threadpool(crud.get_classifier, session, site, clf)
    limits = services.settings.classify
    k = DEFAULT_NEIGHBOURS
    try:
        form = await request.form(max_files=2, max_fields=4)
        try:
            raw_k = form.get("k")
            if isinstance(raw_k, str) and raw_k.strip():
                if not raw_k.strip().isdigit() or not 1 <= int(raw_k) <= MAX_NEIGHBOURS:
                    raise InvalidError(f"k={raw_k!r}: a whole number from 1 to {MAX_NEIGHBOURS}")
                k = int(raw_k)
            upload = form.get("file")
            url = form.get("url")
            data: bytes | None = None
            name = "upload"
            if isinstance(upload, UploadFile) and upload.filename:
                data = await upload.read(limits.max_image_bytes + 1)
                name = upload.filename
        finally:
            await form.close()
        if data is None:
            if not isinstance(url, str) or not url.strip():
                raise InvalidError("file: choose an image, or give its url")
            name = url.strip()
            data = await run_in_threadpool(_fetch_url, services, name)
        image = clf_service.NamedImage(name, data)
        source = {"name": name, "src": _data_url(data, limits.max_image_bytes)}
        answer = await _run_analysis(services, session, classifier, image, None, k)
    except ServiceError as exc:
        return _analysis_view(request, session, classifier, k, None, None, exc.detail, exc.status_code)
    return _analysis_view(request, session, classifier, k, answer, source)


def _data_url(data: bytes, limit: int) -> str | None:
    """The upload shown back inline (the CSP allows data: images); None for one too large or not an image."""
    try:
        fmt, _w, _h = probe_image(data)
    except ImageError:
        return None
    return None if len(data) > limit else f"data:image/{fmt.lower()};base64," + base64.b64encode(data).decode()


def _fetch_url(services: Any, url: str) -> bytes:
    if not url.lower().startswith(("http://", "https://")):
        raise InvalidError(f"url={url[:200]!r}: only http(s) URLs")
    fl = fetch_limits(services)
    try:
        with httpx.Client(timeout=httpx.Timeout(fl.timeout_s)) as client:
            return fetch(client, url, fl)
    except FetchError as exc:
        raise InvalidError(f"url: {exc}") from None


# ---------------------------------------------------------------------------------------------------- Outliers


@router.get(CLF + "/outliers", response_class=HTMLResponse, name="serving.outliers")
def outliers_page(
    request: Request, site: str, clf: str, session: SessionDep, services: ServicesDep, user: SiteViewerDep
) -> HTMLResponse:
    """Grouped images farthest from the rest of their group; keys move (m / 1-9) or delete (d) via REST bulk."""
    classifier = crud.get_classifier(session, site, clf)
    found = outliers.find(services, session, classifier)
    role = user.role_in(classifier.site_id)
    context = {
        **cp.base(classifier),
        "rows": found.rows,
        "note": found.note,
        "groups": [g.name for g in crud.list_groups(session, classifier)],
        "can_label": role is not None and role.rank >= Role.LABELLER.rank,
    }
    return render(request, "serving/outliers.html", context, site=site, clf=clf)


# ------------------------------------------------------------------------------------------ Errors: bulk actions


@router.post(CLF + "/errors/action", response_model=None, name="serving.errors_action")
def errors_action(
    request: Request,
    site: str,
    clf: str,
    session: SessionDep,
    user: SiteLabellerDep,
    action: Annotated[str, Form()],
    image_id: Annotated[list[int] | None, Form()] = None,
    group: Annotated[str, Form()] = "",
) -> Response:
    """The Errors view's form: move the ticked images to any group (created when new) or delete them; one history
    entry, so one undo puts them all back."""
    classifier = crud.get_classifier(session, site, clf)
    ids = sorted(set(image_id or []))
    try:
        if not ids:
            raise InvalidError("image_id: tick at least one image")
        if action == "move":
            name = crud.checked_name(group.strip(), "group")
            image_changes.move_images(session, classifier, ids, name, user.name, None, True)
        elif action == "delete":
            image_changes.delete_images(session, classifier, ids, user.name)
        else:
            raise InvalidError(f"action={action!r} is not one of move, delete")
    except ServiceError as exc:
        session.rollback()
        context = {**pages.errors(session, classifier), "error": exc.detail}
        return render(request, "errors.html", context, exc.status_code, site=site, clf=clf)
    return RedirectResponse(page_path(request, "ui.errors", site=site, clf=clf), status_code=303)


# -------------------------------------------------------------------------------------------------------- Logs


def _when(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidError(f"{field}={value!r}: expected a date or date and time (YYYY-MM-DD[THH:MM])") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)  # the form's times are UTC


def _log_filter(session: Any, site: str, q: dict[str, str | None]) -> tuple[Site, logs.LogFilter]:
    row = crud.get_site(session, site)
    since, until = _when(q["since"], "since"), _when(q["until"], "until")
    return row, logs.LogFilter(row.id, q["classifier"] or None, q["caller"] or None, q["label"] or None, since, until)


@router.get("/ui/sites/{site}/logs", response_class=HTMLResponse, name="serving.logs")
def logs_page(
    request: Request,
    site: str,
    session: SessionDep,
    _user: SiteViewerDep,
    classifier: str | None = None,
    caller: str | None = None,
    label: str | None = None,
    since: str | None = None,
    until: str | None = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    """REST predictions of a site, newest first, filtered; rows past the site's retention are swept first."""
    query = {"classifier": classifier, "caller": caller, "label": label, "since": since, "until": until}
    context: dict[str, Any] = {"site": site, "q": {k: v or "" for k, v in query.items()}, "error": None}
    status_code = 200
    try:
        row, f = _log_filter(session, site, query)
    except InvalidError as exc:
        row, f = crud.get_site(session, site), None
        context["error"], status_code = exc.detail, exc.status_code
    context["swept"] = logs.sweep(session, row.id)
    context["retention_days"] = logs.kept_days(session, row.id)
    context["choices"] = logs.choices(session, row.id)
    page = logs.query(session, f, before) if f is not None else logs.LogPage([], None)
    context["rows"] = [
        {**dict(zip(logs.CSV_COLUMNS, logs.csv_row(r), strict=True)), "top": list(r.probabilities.items())[:3]}
        for r in page.rows
    ]
    filters = "&".join(f"{k}={v}" for k, v in query.items() if v)
    context["csv_url"] = page_path(request, "serving.logs_csv", site=site) + (f"?{filters}" if filters else "")
    here = page_path(request, "serving.logs", site=site)
    context["next_url"] = None if page.next_before is None else f"{here}?{filters}&before={page.next_before}"
    return render(request, "serving/logs.html", context, status_code, site=site)


@router.get("/ui/sites/{site}/logs.csv", response_model=None, name="serving.logs_csv")
def logs_csv(
    site: str,
    session: SessionDep,
    services: ServicesDep,
    _user: SiteViewerDep,
    classifier: str | None = None,
    caller: str | None = None,
    label: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Response:
    """Every matching row as CSV (all probabilities as one JSON column), streamed in batches."""
    query = {"classifier": classifier, "caller": caller, "label": label, "since": since, "until": until}
    row, f = _log_filter(session, site, query)
    logs.sweep(session, row.id)

    def stream() -> Iterator[str]:  # its own session: the request's closes before a streamed body is sent
        with services.sessions() as own:
            yield from logs.iter_csv(own, f)

    headers = {"Content-Disposition": f'attachment; filename="predictions-{site}.csv"'}
    return StreamingResponse(stream(), media_type="text/csv; charset=utf-8", headers=headers)
