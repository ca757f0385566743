"""The older tools' ``temple_id`` → camfleet's site and classifier, their 400 answer and their base64 images.

Every compat function raises ``ServiceError`` kinds for bad input (the router answers them in the old tools'
shapes with a 4xx status); nothing in compat knows HTTP.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from camfleet_hub.auth.models import Role
from camfleet_hub.compat.names import as_name
from camfleet_hub.compat.schemas import CompatSettings
from camfleet_hub.core.errors import NotFoundError, ServiceError
from camfleet_hub.datasets import crud
from camfleet_hub.datasets.models import Classifier, Site

if TYPE_CHECKING:
    from camfleet_hub.auth.principal import Principal
    from camfleet_hub.core.container import HubServices


class BadRequest(ServiceError):
    """The old tools answered 400 for every bad request; their clients check for it."""

    status_code = 400


def settings_of(services: HubServices) -> CompatSettings:
    return services.settings.compat


def decode_base64(text: str, field: str) -> bytes:
    """Base64 (a ``data:image/...;base64,`` prefix allowed) → bytes; 400 naming the field otherwise."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{field}: not valid base64") from None
    if not data:
        raise BadRequest(f"{field}: empty image")
    return data


def classifier_name(cfg: CompatSettings, temple_id: str, asked: str | None = None) -> str:
    return asked or cfg.classifiers.get(temple_id, cfg.classifier)


def temple_classifier(
    services: HubServices,
    session: Session,
    user: Principal,
    temple_id: str,
    role: Role,
    create: bool = False,
    asked: str | None = None,
) -> Classifier:
    """The classifier that serves ``temple_id`` (the site ``as_name(temple_id)``); with ``create`` an unknown
    site/classifier is made (hub admins)."""
    cfg = settings_of(services)
    name = classifier_name(cfg, temple_id, asked)
    site_name = as_name(temple_id, "temple_id")
    site = session.scalar(select(Site).where(Site.name == site_name))
    if site is None:
        if not (create and cfg.create_sites):
            raise NotFoundError(f"temple_id={temple_id!r}: no such site on this hub")
        user.require_admin()
        site = crud.create_site(session, site_name)
    user.require(site.id, role, site.name)
    clf = session.scalar(select(Classifier).where(Classifier.site_id == site.id, Classifier.name == name))
    if clf is None:
        if not (create and cfg.create_sites):
            raise NotFoundError(f"temple_id={temple_id!r}: site has no classifier {name!r} (compat.classifier)")
        user.require(site.id, Role.ADMIN, site.name)
        clf = crud.create_classifier(session, site, name)
    return clf
