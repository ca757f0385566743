"""The Analysis page of one image (a dataset image, a camera frame, an upload or a URL): every group's probability,
the anomaly in words and the k nearest dataset images, from the same service as REST analyse (``serving.analyse``)."""

from __future__ import annotations

import base64
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from camfleet_contract.images import ImageError, probe_image
from camfleet_hub.auth.deps import SiteViewerDep
from camfleet_hub.core import urls
from camfleet_hub.core.container import HubServices
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import InvalidError, NotFoundError, ServiceError
from camfleet_hub.core.store.base import ObjectNotFound
from camfleet_hub.datasets import crud
from camfleet_hub.datasets import page_data as cp
from camfleet_hub.datasets.models import Classifier, Frame
from camfleet_hub.imports.fetch import FetchError, fetch
from camfleet_hub.imports.jobs import fetch_limits
from camfleet_hub.serving import analyse as analysis
from camfleet_hub.serving import classify as clf_service
from camfleet_hub.serving.schemas import DEFAULT_NEIGHBOURS, MAX_NEIGHBOURS, AnalyseAnswer
from camfleet_hub.web.render import CLASSIFIER_PATH as CLF
from camfleet_hub.web.render import page_path, render

router = APIRouter(include_in_schema=False)


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
    answer: AnalyseAnswer | None = None,
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
) -> AnalyseAnswer:
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
