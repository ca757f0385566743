"""Near-duplicate pairs of a classifier, "keep one" resolution, and the classifier's distance threshold."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from camfleet_hub.auth.deps import SiteLabellerDep, SiteViewerDep
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.datasets import crud, duplicates
from camfleet_hub.datasets.schemas import (
    DuplicateSettings,
    DuplicateSettingsPublic,
    DuplicatesPage,
    DuplicatesResolve,
    DuplicatesResolved,
)

router = APIRouter(tags=["duplicates"])


@router.get("/sites/{site}/classifiers/{clf}/duplicates", operation_id="list_duplicates", response_model=DuplicatesPage)
def list_duplicates(
    site: str,
    clf: str,
    session: SessionDep,
    services: ServicesDep,
    _user: SiteViewerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DuplicatesPage:
    """Pairs of non-deleted images closer than ``max_equal_distance``, closest first."""
    classifier = crud.get_classifier(session, site, clf)
    model = services.embedder.current_model(session) if services.embedder is not None else None
    pairs = duplicates.find_pairs(session, services.near_indexes, classifier, model)
    page = [duplicates.pair_view(session, p) for p in pairs[offset : offset + limit]]
    return DuplicatesPage(
        pairs=page, total=len(pairs), max_equal_distance=classifier.max_equal_distance, embedded=model is not None
    )


@router.post(
    "/sites/{site}/classifiers/{clf}/duplicates/resolve",
    operation_id="resolve_duplicates",
    response_model=DuplicatesResolved,
)
def resolve_duplicates(
    site: str, clf: str, body: DuplicatesResolve, session: SessionDep, user: SiteLabellerDep
) -> DuplicatesResolved:
    """Keep one image; the others become DELETED (never offered again, restorable)."""
    classifier = crud.get_classifier(session, site, clf)
    dropped = duplicates.resolve(session, classifier, body.keep, body.drop, user.name)
    return DuplicatesResolved(kept=body.keep, deleted=dropped)


@router.patch(
    "/sites/{site}/classifiers/{clf}/duplicates",
    operation_id="set_duplicate_threshold",
    response_model=DuplicateSettingsPublic,
)
def set_duplicate_threshold(
    site: str, clf: str, body: DuplicateSettings, session: SessionDep, _user: SiteLabellerDep
) -> DuplicateSettingsPublic:
    """Set the classifier's ``max_equal_distance`` (cosine distance; used by the import check and this page)."""
    classifier = duplicates.set_threshold(session, crud.get_classifier(session, site, clf), body.max_equal_distance)
    return DuplicateSettingsPublic(max_equal_distance=classifier.max_equal_distance)
