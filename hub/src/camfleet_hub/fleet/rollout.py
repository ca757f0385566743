"""Model rollout per classifier: stage a version on named agents or a share of them, widen, promote to all, pin an
agent to a version, roll back everywhere in one click.

The plan travels in the classifier's retained announcement (docs/PROTOCOL.md, "Rollout"): the default entry is the
production version, ``agents`` names the staged and pinned agents with their own entry. Each entry is a bundle the
hub signed; an entry below a version an agent may have applied carries a hub-signed rollback statement.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from camfleet_contract.messages import AgentModel, ModelAnnouncement
from camfleet_contract.rollback import sign_rollback
from camfleet_contract.topics import TopicError, validate_name
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.errors import ConflictError, InvalidError, NotFoundError
from camfleet_hub.datasets.models import Classifier, Site
from camfleet_hub.fleet import behaviour
from camfleet_hub.fleet.models import Agent, Pin, Rollout
from camfleet_hub.training import announce, registry
from camfleet_hub.training.models import ModelVersion

if TYPE_CHECKING:
    from camfleet_hub.core.container import HubServices


def in_share(classifier: str, agent: str, percent: int) -> bool:
    """Whether ``agent`` is in the first ``percent`` % of the site's agents for this classifier: a stable hash,
    so widening from 10 % to 50 % keeps the first 10 % and a new agent does not reshuffle the others."""
    bucket = int.from_bytes(hashlib.sha256(f"{classifier}/{agent}".encode()).digest()[:8], "big") % 100
    return bucket < percent


def _row(session: Session, classifier: Classifier, by: str) -> Rollout:
    row = session.get(Rollout, classifier.id)
    if row is None:
        row = Rollout(classifier_id=classifier.id, agents=[], percent=0, highest_staged=0, updated_by=by)
        session.add(row)
    return row


def _names(agents: list[str]) -> list[str]:
    try:
        return sorted({validate_name(a, "agents") for a in agents})
    except TopicError as exc:
        raise InvalidError(str(exc)) from None


def _site_of(session: Session, classifier: Classifier) -> Site:
    site = session.get(Site, classifier.site_id)
    assert site is not None
    return site


def _model_of(session: Session, classifier: Classifier, version: int) -> ModelVersion:
    model = session.scalar(
        select(ModelVersion).where(ModelVersion.classifier_id == classifier.id, ModelVersion.version == version)
    )
    if model is None:
        raise NotFoundError(f"classifier {classifier.name!r} has no model version {version}")
    return model


def stage(
    services: HubServices,
    session: Session,
    classifier: Classifier,
    version: int,
    agents: list[str],
    percent: int,
    by: str,
) -> None:
    """Run ``version`` on the named agents and on ``percent`` % of the site's agents; the rest keep production."""
    model = _model_of(session, classifier, version)
    production = announce.production_model(session, classifier)
    if production is None:
        raise ConflictError(f"classifier {classifier.name!r} has no production version yet: promote one to all first")
    if model.version <= production.version:
        raise ConflictError(
            f"version={version} is not above the production version {production.version}: stage only a newer one"
        )
    if not agents and percent == 0:
        raise InvalidError("name agents or give percent > 0 (percent=100 promotes to all)")
    if percent >= 100:
        registry.promote(services, session, model)
        clear_stage(session, classifier)
        session.commit()
        announce.announce_site(services, session, _site_of(session, classifier))
        return
    row = _row(session, classifier, by)
    if row.model_id != model.id:
        row.agents, row.percent = [], 0
    row.model_id = model.id
    row.agents = sorted(set(row.agents) | set(_names(agents)))  # widening never drops a staged agent
    row.percent = max(row.percent, percent)
    row.highest_staged = max(row.highest_staged, model.version)
    row.updated_by, row.updated_at = by, utcnow()
    session.commit()
    announce.announce_site(services, session, _site_of(session, classifier))


def clear_stage(session: Session, classifier: Classifier) -> None:
    row = session.get(Rollout, classifier.id)
    if row is not None:
        row.model_id, row.agents, row.percent = None, [], 0


def promote_all(services: HubServices, session: Session, classifier: Classifier, version: int | None) -> ModelVersion:
    """Promote ``version`` (default: the staged one) to every agent not pinned."""
    row = session.get(Rollout, classifier.id)
    if version is None:
        if row is None or row.model_id is None:
            raise ConflictError(f"classifier {classifier.name!r} has no staged version; name the version to promote")
        model = session.get(ModelVersion, row.model_id)
        assert model is not None
    else:
        model = _model_of(session, classifier, version)
    clear_stage(session, classifier)
    registry.promote(services, session, model)  # commits and re-announces
    return model


def rollback_all(services: HubServices, session: Session, classifier: Classifier) -> ModelVersion:
    """One click: a staged version is withdrawn from the agents that run it; with none staged, production is rolled
    back to the version before it. Pins to a withdrawn version go too. Returns what everyone runs now."""
    row = session.get(Rollout, classifier.id)
    production = announce.production_model(session, classifier)
    if row is not None and row.model_id is not None:
        withdrawn = row.model_id
        clear_stage(session, classifier)
        session.execute(delete(Pin).where(Pin.classifier_id == classifier.id, Pin.model_id == withdrawn))
        session.commit()
        announce.announce_site(services, session, _site_of(session, classifier))
        if production is None:
            raise ConflictError(f"classifier {classifier.name!r} has no production version")
        return production
    if production is None:
        raise ConflictError(f"classifier {classifier.name!r} has no production version to roll back")
    session.execute(delete(Pin).where(Pin.classifier_id == classifier.id, Pin.model_id == production.id))
    return registry.rollback(services, session, production)  # commits and re-announces


def pin(services: HubServices, session: Session, classifier: Classifier, agent: str, version: int, by: str) -> None:
    model = _model_of(session, classifier, version)
    name = _names([agent])[0]
    existing = session.scalar(select(Pin).where(Pin.classifier_id == classifier.id, Pin.agent == name))
    if existing is None:
        session.add(Pin(classifier_id=classifier.id, agent=name, model_id=model.id, created_by=by))
    else:
        existing.model_id, existing.created_by, existing.created_at = model.id, by, utcnow()
    session.commit()
    announce.announce_site(services, session, _site_of(session, classifier))


def unpin(services: HubServices, session: Session, classifier: Classifier, agent: str) -> None:
    row = session.scalar(select(Pin).where(Pin.classifier_id == classifier.id, Pin.agent == agent))
    if row is None:
        raise NotFoundError(f"agent {agent!r} is not pinned on classifier {classifier.name!r}")
    session.delete(row)
    session.commit()
    announce.announce_site(services, session, _site_of(session, classifier))


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """Who runs what, as the announcement will say."""

    production: ModelVersion | None
    staged: ModelVersion | None
    staged_agents: list[str]
    percent: int
    pins: dict[str, ModelVersion]
    highest_staged: int

    def expected(self, classifier: str, agent: str) -> ModelVersion | None:
        if agent in self.pins:
            return self.pins[agent]
        if self.staged is not None and (agent in self.staged_agents or in_share(classifier, agent, self.percent)):
            return self.staged
        return self.production


def plan_of(session: Session, classifier: Classifier) -> Plan:
    production = announce.production_model(session, classifier)
    row = session.get(Rollout, classifier.id)
    staged = session.get(ModelVersion, row.model_id) if row is not None and row.model_id is not None else None
    if staged is not None and production is not None and staged.version <= production.version:
        staged = None  # promoted meanwhile by another route: nothing is staged any more
    rows = session.execute(
        select(Pin.agent, ModelVersion)
        .join(ModelVersion, ModelVersion.id == Pin.model_id)
        .where(Pin.classifier_id == classifier.id)
    )
    pins: dict[str, ModelVersion] = {r[0]: r[1] for r in rows}
    return Plan(
        production=production,
        staged=staged,
        staged_agents=list(row.agents) if row is not None and staged is not None else [],
        percent=row.percent if row is not None and staged is not None else 0,
        pins=pins,
        highest_staged=row.highest_staged if row is not None else 0,
    )


def _agents_of(session: Session, site: Site) -> list[str]:
    return list(session.scalars(select(Agent.name).where(Agent.site_id == site.id).order_by(Agent.name)))


def with_plan(
    services: HubServices, session: Session, site: Site, classifier: Classifier, default: ModelAnnouncement
) -> ModelAnnouncement:
    """The announcement of ``default`` (production) extended by the plan: staged agents and pins get their entry,
    and entries below a version some agent may run carry a rollback statement that withdraws it."""
    plan = plan_of(session, classifier)
    promoted = session.scalar(
        select(func.max(ModelVersion.version)).where(
            ModelVersion.classifier_id == classifier.id, ModelVersion.promoted_at.is_not(None)
        )
    )
    staging = plan.staged.version if plan.staged is not None else 0
    # Versions agents may have applied and should leave: every promoted one, and staged ones no longer staged.
    withdrawn = max(int(promoted or 0), plan.highest_staged if plan.highest_staged > staging else 0)
    highest_any = max(int(promoted or 0), plan.highest_staged)
    ann = default
    dv = int(default.version)
    if withdrawn > dv and (default.rollback is None or int(default.rollback.replaces) < withdrawn):
        ann = ann.model_copy(
            update={
                "rollback": sign_rollback(
                    site.name, classifier.name, default.version, str(withdrawn), services.fleet_signing_key
                )
            }
        )
    entries: dict[str, AgentModel] = {}
    targets = set(plan.pins) | set(plan.staged_agents)
    if plan.staged is not None and plan.percent:
        targets |= {a for a in _agents_of(session, site) if in_share(classifier.name, a, plan.percent)}
    for agent in sorted(targets):
        model = plan.expected(classifier.name, agent)
        if model is None or model.version == dv:
            continue
        pinned_low = agent in plan.pins and model.version < highest_any
        statement = (
            sign_rollback(site.name, classifier.name, str(model.version), str(highest_any), services.fleet_signing_key)
            if pinned_low
            else None
        )
        base = announce.announcement(services.bundle_signatures, model, classifier.name)
        entries[agent] = AgentModel(
            version=base.version,
            sha256=base.sha256,
            size=base.size,
            url=base.url,
            signature=base.signature,
            classes=base.classes,
            rollback=statement,
        )
    return ann.model_copy(update={"agents": entries}) if entries else ann


# --------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class AgentRollout:
    agent: str
    state: str
    expected_version: int | None
    applied_version: str | None
    pinned: bool
    staged: bool
    problems: list[str]
    first_frames: behaviour.Figures | None = None  # the agent's latest version after its swap
    previous_frames: behaviour.Figures | None = None  # and the version it ran before


@dataclass(frozen=True)
class RolloutView:
    site: str
    classifier: str
    production_version: int | None
    staged_version: int | None
    staged_agents: list[str]
    percent: int
    pins: dict[str, int]
    agents: list[AgentRollout]
    anomaly_jumps: list[behaviour.Jump]

    @property
    def flagged_versions(self) -> list[str]:
        """Versions whose anomaly rate jumped against the previous version on at least one agent."""
        return sorted({j.version for j in self.anomaly_jumps}, key=lambda v: (len(v), v))


def view(session: Session, site: Site, classifier: Classifier) -> RolloutView:
    plan = plan_of(session, classifier)
    figures = behaviour.reported(session, site.id, classifier.name)
    agents = []
    for row in session.scalars(select(Agent).where(Agent.site_id == site.id).order_by(Agent.name)):
        status = row.status or {}
        applied = (status.get("models") or {}).get(classifier.name)
        problems = [str(p) for p in status.get("problems") or [] if classifier.name in str(p)]
        expected = plan.expected(classifier.name, row.name)
        agents.append(
            AgentRollout(
                agent=row.name,
                state=row.state,
                expected_version=expected.version if expected is not None else None,
                applied_version=str(applied) if applied is not None else None,
                pinned=row.name in plan.pins,
                staged=plan.staged is not None and expected is plan.staged,
                problems=problems,
                first_frames=figures[row.name][0] if figures.get(row.name) else None,
                previous_frames=figures[row.name][1] if len(figures.get(row.name, [])) > 1 else None,
            )
        )
    return RolloutView(
        site=site.name,
        classifier=classifier.name,
        production_version=plan.production.version if plan.production is not None else None,
        staged_version=plan.staged.version if plan.staged is not None else None,
        staged_agents=plan.staged_agents,
        percent=plan.percent,
        pins={a: m.version for a, m in plan.pins.items()},
        agents=agents,
        anomaly_jumps=behaviour.jumps(session, site.id, classifier.name),
    )
