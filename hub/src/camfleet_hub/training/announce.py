"""Model announcements: the retained message per site and classifier that tells agents which bundle to run."""

from __future__ import annotations

import io
import logging
import threading
import zipfile
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import Session, defer

from camfleet_contract.bundle import DEFAULT_CLASSIFIER as DEFAULT_CLASSIFIER  # the default bundle's name
from camfleet_contract.bundle import SIGNATURE
from camfleet_contract.messages import ModelAnnouncement, to_json
from camfleet_contract.rollback import RollbackStatement, sign_rollback
from camfleet_hub.core import urls
from camfleet_hub.core.store.base import ObjectStore
from camfleet_hub.datasets.models import Classifier, Site
from camfleet_hub.training.models import ModelStatus, ModelVersion

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubServices

log = logging.getLogger(__name__)

BUNDLE_PREFIX = "bundles"


class BundleSignatures:
    """The manifest signature inside each stored bundle zip, read once per bundle (a stored bundle never changes)."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def of(self, sha: str) -> str:
        with self._lock:
            if sha in self._known:
                return self._known[sha]
        with zipfile.ZipFile(io.BytesIO(self._store.get(sha, prefix=BUNDLE_PREFIX))) as zf:
            signature = zf.read(SIGNATURE).decode().strip()
        self.remember(sha, signature)
        return signature

    def remember(self, sha: str, signature: str) -> None:
        """Prime it when the hub has just signed the bundle itself."""
        with self._lock:
            self._known[sha] = signature


def production_model(session: Session, classifier: Classifier) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion)
        .where(ModelVersion.classifier_id == classifier.id, ModelVersion.status == ModelStatus.PRODUCTION.value)
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )


# The classifier's production model, else the ImageNet default in production: one query, built once (classify runs
# it per request; see crud._CLASSIFIER_BY_NAMES). Its manifest, metrics and report (JSON, up to hundreds of KB
# with a model report) load only when first read.
_SERVING_MODEL = (
    select(ModelVersion)
    .options(defer(ModelVersion.manifest), defer(ModelVersion.metrics), defer(ModelVersion.report))
    .where(
        or_(ModelVersion.classifier_id == bindparam("classifier_id"), ModelVersion.classifier_id.is_(None)),
        ModelVersion.status == ModelStatus.PRODUCTION.value,
    )
    .order_by(ModelVersion.classifier_id.is_(None), ModelVersion.version.desc())
    .limit(1)
)


def serving_model(session: Session, classifier: Classifier) -> ModelVersion | None:
    return session.scalar(_SERVING_MODEL, {"classifier_id": classifier.id})


def default_model(session: Session) -> ModelVersion | None:
    """The ImageNet no-training default in production, if one was uploaded."""
    return session.scalar(
        select(ModelVersion)
        .where(ModelVersion.classifier_id.is_(None), ModelVersion.status == ModelStatus.PRODUCTION.value)
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )


def rollback_statement(
    services: HubServices, session: Session, site: Site, classifier: Classifier, model: ModelVersion
) -> RollbackStatement | None:
    """A fleet-signed rollback when `model` is below a version that was ever in production, else None.

    Agents refuse a version below the highest they applied unless this statement names it.
    """
    highest = session.scalar(
        select(func.max(ModelVersion.version)).where(
            ModelVersion.classifier_id == classifier.id, ModelVersion.promoted_at.is_not(None)
        )
    )
    if highest is None or int(highest) <= model.version:
        return None
    return sign_rollback(site.name, classifier.name, str(model.version), str(highest), services.fleet_signing_key)


def announcement(
    signatures: BundleSignatures, model: ModelVersion, classifier: str, rollback: RollbackStatement | None = None
) -> ModelAnnouncement:
    """The announcement of one registered model under a classifier name."""
    return ModelAnnouncement(
        classifier=classifier,
        version=str(model.version),
        sha256=model.sha256,
        size=model.size,
        url=urls.model_bundle(model.id),
        signature=signatures.of(model.sha256),
        classes=list(model.manifest.get("classes", [])),
        rollback=rollback,
    )


def _publish(services: HubServices, topic: str, payload: bytes) -> None:
    """Publish retained; a broker problem is logged, and the start-up re-announce repairs it."""
    try:
        services.mqtt.publish(topic, payload, qos=1, retain=True)
    except Exception:
        log.exception("could not publish the model announcement on %s", topic)


def announce_site(services: HubServices, session: Session, site: Site) -> list[str]:
    """Publish every production model of the site, or the default while it has none; returns the topics."""
    from camfleet_hub.fleet.rollout import with_plan  # staged agents and pins (fleet domain)

    topics: list[str] = []
    classifiers = list(session.scalars(select(Classifier).where(Classifier.site_id == site.id)))
    for clf in classifiers:
        model = production_model(session, clf)
        if model is not None:
            topic = services.topics.model(site.name, clf.name)
            statement = rollback_statement(services, session, site, clf, model)
            ann = with_plan(
                services, session, site, clf, announcement(services.bundle_signatures, model, clf.name, statement)
            )
            _publish(services, topic, to_json(ann))
            topics.append(topic)
    if any(c.name == DEFAULT_CLASSIFIER for c in classifiers):
        return topics  # a site classifier owns that topic
    default_topic = services.topics.model(site.name, DEFAULT_CLASSIFIER)
    default = default_model(session) if not topics else None
    if default is not None:
        _publish(
            services, default_topic, to_json(announcement(services.bundle_signatures, default, DEFAULT_CLASSIFIER))
        )
        topics.append(default_topic)
    else:
        _publish(services, default_topic, b"")  # clears the retained default (a no-op when none was there)
    return topics


def announce_all(services: HubServices) -> None:
    """Re-announce every site (at start-up and after the default bundle changes)."""
    with services.sessions() as session:
        for site in session.scalars(select(Site).order_by(Site.id)):
            try:
                announce_site(services, session, site)
            except Exception:
                log.exception("could not announce the models of site %r", site.name)
