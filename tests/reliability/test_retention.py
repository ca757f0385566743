"""Dataset retention: per-site rules applied by ``retention.sweep`` to frames stored by the real ingest worker, and
the per-site storage figure. Confirmed images are kept with their frame, old NEW frames go, DELETED images keep
their row (a hash) but lose their bytes, and an object another site still needs stays."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, update

from camfleet_contract.topics import Topics
from camfleet_hub.core.db.session import make_engine, make_sessionmaker, migrate
from camfleet_hub.core.db.types import utcnow
from camfleet_hub.core.store import DirectoryStore
from camfleet_hub.core.store.base import sha256_hex
from camfleet_hub.datasets.models import Blob, Camera, Classifier, Frame, Image, ImageStatus, Site
from camfleet_hub.datasets.retention import RetentionRules, RetentionSettings, SiteStorage, storage_by_site, sweep
from tests.reliability.faultkit import Sender, ingest_worker, settings_for, stored_ids
from tests.support.polling import wait_for


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'hub.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    eng = make_engine(url)
    migrate(eng)
    with make_sessionmaker(eng)() as session:
        for name, clf in (("shop", "door"), ("lot", "bay")):
            site = Site(name=name)
            session.add(site)
            session.flush()
            session.add_all([Camera(site_id=site.id, name="cam1"), Classifier(site_id=site.id, name=clf)])
        session.commit()
    try:
        yield eng
    finally:
        eng.dispose()


def test_sweep_applies_per_site_rules(tmp_path: Path, engine: Engine, mosquitto, jpegs: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    url = engine.url.render_as_string(hide_password=False)
    store = DirectoryStore(tmp_path / "objects")
    settings = settings_for(tmp_path, url, mosquitto.host, mosquitto.port)
    topics = Topics(settings.mqtt.root)
    with ingest_worker(settings, engine, store) as (_worker, sessions, _stats):
        sender = Sender(mosquitto.host, mosquitto.port, topics)
        sender.start()
        try:
            shop = [sender.send(jpegs[i], site="shop") for i in range(4)]  # confirmed, deleted, new, new (shared)
            lot = [sender.send(jpegs[i], site="lot") for i in (3, 5)]  # jpegs[3] is in both sites
            wait_for(lambda: len(stored_ids(sessions)) == 6, "6 frames stored")
        finally:
            sender.stop()
    old = utcnow() - timedelta(days=40)
    with sessions() as session:
        session.execute(update(Frame).values(received_at=old))
        session.execute(update(Image).where(Image.frame_id == shop[0]).values(status=ImageStatus.GROUP.value))
        session.execute(
            update(Image).where(Image.frame_id == shop[1]).values(status=ImageStatus.DELETED.value, updated_at=old)
        )
        session.commit()
        before = storage_by_site(session)
    sizes = {i: len(jpegs[i]) for i in range(6)}
    assert before["shop"] == SiteStorage(4, sum(sizes[i] for i in range(4)))
    assert before["lot"] == SiteStorage(2, sizes[3] + sizes[5])

    rules = RetentionSettings(
        default=RetentionRules(new_frame_days=30), sites={"lot": RetentionRules(new_frame_days=None)}
    )
    result = sweep(sessions, store, rules)
    assert (result.frames, result.images, result.objects) == (3, 2, 2), result
    assert result.bytes == sizes[1] + sizes[2]

    with sessions() as session:
        frames = set(session.execute(select(Frame.frame_id)).scalars())
        assert frames == {shop[0], *lot}  # the confirmed frame and the other site's frames stay
        statuses = dict(session.execute(select(Image.frame_id, Image.status)).all())
        assert statuses == {
            shop[0]: "GROUP",
            shop[1]: "DELETED",  # kept as a hash: the same bytes again are still known as deleted
            lot[0]: "NEW",
            lot[1]: "NEW",
        }
        assert session.execute(select(func.count()).select_from(Blob)).scalar_one() == 5  # every hash row stays
        after = storage_by_site(session)
    assert [store.exists(sha256_hex(jpegs[i])) for i in range(6)] == [True, False, False, True, False, True]
    assert after["shop"] == SiteStorage(1, sizes[0])
    assert after["lot"] == before["lot"]
    assert sweep(sessions, store, rules) == type(result)()  # nothing more to do


def test_the_hub_runs_the_sweeper(tmp_path: Path, mosquitto, jpegs: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    from camfleet_hub.app import Hub
    from tests.reliability.faultkit import frame_count, seed_site

    settings = settings_for(
        tmp_path,
        f"sqlite:///{tmp_path / 'hub.db'}",
        mosquitto.host,
        mosquitto.port,
        retention={"interval_s": 0.5, "default": {"new_frame_days": 1}},
    )
    hub = Hub(settings, http=False, ingest=True, broker=False)
    services = hub.start()
    try:
        seed_site(services.engine)
        assert hub.ingest is not None and hub.ingest.client.subscribed.wait(30)
        sender = Sender(mosquitto.host, mosquitto.port, Topics(settings.mqtt.root))
        sender.start()
        try:
            sender.send(jpegs[0])
            wait_for(lambda: frame_count(services.sessions) == 1, "the frame stored")
        finally:
            sender.stop()
        with services.sessions() as session:
            session.execute(update(Frame).values(received_at=utcnow() - timedelta(days=2)))
            session.commit()
        wait_for(lambda: frame_count(services.sessions) == 0, "the sweeper to remove the 2-day-old frame")
        wait_for(lambda: not services.store.exists(sha256_hex(jpegs[0])), "its object removed")
    finally:
        hub.stop()
