"""A site's prediction Logs page (REST classify and Try it predictions, filtered, newest first) and its CSV
export."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from camfleet_hub.auth.deps import SiteViewerDep
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import InvalidError
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Site
from camfleet_hub.serving import logs
from camfleet_hub.web.render import page_path, render

router = APIRouter(include_in_schema=False)


def _when(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidError(f"{field}={value!r}: expected a date or date and time (YYYY-MM-DD[THH:MM])") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)  # the form's times are UTC


@dataclass(frozen=True)
class LogQuery:
    """The Logs page's filters, as query parameters of the page and of its CSV export."""

    classifier: str | None = None
    caller: str | None = None
    label: str | None = None
    since: str | None = None
    until: str | None = None

    def given(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}


LogQueryDep = Annotated[LogQuery, Depends()]


def _log_filter(session: Any, site: str, q: LogQuery) -> tuple[Site, logs.LogFilter]:
    row = crud.get_site(session, site)
    since, until = _when(q.since, "since"), _when(q.until, "until")
    return row, logs.LogFilter(row.id, q.classifier or None, q.caller or None, q.label or None, since, until)


@router.get("/ui/sites/{site}/logs", response_class=HTMLResponse, name="serving.logs")
def logs_page(
    request: Request,
    site: str,
    session: SessionDep,
    _user: SiteViewerDep,
    query: LogQueryDep,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    """REST predictions of a site, newest first, filtered; the fleet sweeper ages out rows past retention."""
    context: dict[str, Any] = {"site": site, "q": {k: v or "" for k, v in asdict(query).items()}, "error": None}
    status_code = 200
    try:
        row, f = _log_filter(session, site, query)
    except InvalidError as exc:
        row, f = crud.get_site(session, site), None
        context["error"], status_code = exc.detail, exc.status_code
    context["retention_days"] = logs.kept_days(session, row.id)
    context["choices"] = logs.choices(session, row.id)
    page = logs.query(session, f, before) if f is not None else logs.LogPage([], None)
    context["rows"] = [
        {**dict(zip(logs.CSV_COLUMNS[:-1], logs.csv_row(r, probabilities=False), strict=True)), "top": r.top(3).items()}
        for r in page.rows
    ]
    filters = urlencode(query.given())  # a caller or label may hold "&" or "=": encoded, the links keep the filter
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
    query: LogQueryDep,
) -> Response:
    """Every matching row as CSV (all probabilities as one JSON column), streamed in batches."""
    _row, f = _log_filter(session, site, query)

    def stream() -> Iterator[str]:  # its own session: the request's closes before a streamed body is sent
        with services.sessions() as own:
            yield from logs.iter_csv(own, f)

    headers = {"Content-Disposition": f'attachment; filename="predictions-{site}.csv"'}
    return StreamingResponse(stream(), media_type="text/csv; charset=utf-8", headers=headers)
