"""The one way every web page is rendered: one Jinja2 environment, one ``render``, URLs from route names.

Templates get ``csrf_field()`` (the hidden token field of every POST form) and ``path_for(name, **params)`` (the
path of a named page route); Python builds redirects with ``page_path``. Paths, not absolute URLs: the hub's
pages and redirects have always been host-relative, and a proxy in front may change the host.
A page about one site or classifier passes ``site`` / ``clf`` and gets the breadcrumb and the classifier's
sub-navigation (``_crumbs.html``) with its links built here from route names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from markupsafe import Markup

from camfleet_hub import __version__

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

CLASSIFIER_PATH = "/ui/sites/{site}/classifiers/{clf}"  # the prefix of a classifier's page routes

templates = Jinja2Templates(directory=str(resources.files("camfleet_hub.web") / "templates"))


def page_context(page: DataclassInstance, **extra: object) -> dict[str, object]:
    """A page builder's typed result as a template context (its fields, shallow), plus ``extra`` names."""
    return {**{f.name: getattr(page, f.name) for f in fields(page)}, **extra}


def page_path(request: Request, name: str, /, **params: Any) -> str:
    """The path of the page route called ``name`` (``ui.*``, ``fleet.*``, ``serving.*``) with ``params`` filled in."""
    return str(request.app.url_path_for(name, **{k: str(v) for k, v in params.items()}))


@pass_context
def path_for(context: Mapping[str, Any], name: str, /, **params: Any) -> str:
    """``{{ path_for('ui.model', model_id=m.id) }}`` in templates."""
    return page_path(context["request"], name, **params)


@pass_context
def csrf_field(context: Mapping[str, Any]) -> Markup:
    """``{{ csrf_field() }}`` in every POST form: the session's CSRF token (set by ``api.security``)."""
    token = getattr(context["request"].state, "csrf_token", "")
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(token)


templates.env.globals["csrf_field"] = csrf_field
templates.env.globals["path_for"] = path_for


def classifier_links(request: Request, site: str, clf: str) -> dict[str, str]:
    """The classifier sub-navigation's targets (``_curation_links.html``), from route names."""

    def p(name: str) -> str:
        return page_path(request, name, site=site, clf=clf)

    return {
        "classifier": p("ui.classifier"),
        "triage": p("ui.triage"),
        "deleted": p("ui.triage") + "?view=deleted",
        "history": p("ui.history"),
        "training": p("ui.training"),
        "errors": p("ui.errors"),
        "import": p("ui.import"),
        "duplicates": p("ui.duplicates"),
        "outliers": p("serving.outliers"),
        "analyse": p("serving.analyse"),
        "logs": page_path(request, "serving.logs", site=site),
    }


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    status_code: int = 200,
    *,
    site: str | None = None,
    clf: str | None = None,
) -> HTMLResponse:
    """Render template ``name``; ``site`` (and ``clf``) put the page under that site (classifier) in the breadcrumb."""
    page: dict[str, Any] = {**context, "version": __version__}
    if site is not None:
        overview = page_path(request, "ui.overview")
        crumbs = [(f"site {site}", f"{overview}#site-{site}")]
        if clf is not None:
            links = classifier_links(request, site, clf)
            page["links"] = {**page.get("links", {}), **links}  # the page's REST links (api, export) stay
            crumbs.append((f"{site} / {clf}", links["classifier"]))
        page["crumbs"] = crumbs
    return templates.TemplateResponse(request, name, page, status_code=status_code)
