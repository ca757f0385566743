"""Schema, migrations and models on SQLite and the real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import IntegrityError

from camfleet_hub.core.db.base import Base
from camfleet_hub.core.db.session import make_engine, make_sessionmaker, migrate
from camfleet_hub.datasets.models import Blob, Camera, Classifier, Frame, Group, Image, ImageStatus, Site
from camfleet_hub.fleet.models import Agent
from camfleet_hub.ingest.models import DeadLetter
from camfleet_hub.serving.models import PredictionLog
from camfleet_hub.training.models import ModelStatus, ModelVersion, TrainingJob

SHA = "ab" * 32
HEAD = "0012"


def test_migration_creates_every_table(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_migration_matches_models(engine: Engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        assert compare_metadata(ctx, Base.metadata) == []


def test_migrate_twice_is_a_no_op(engine: Engine) -> None:
    migrate(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one() == HEAD


def test_upgrade_from_0001_keeps_rows_and_downgrade_works(db_url: str) -> None:
    """An issue-3 database (0001) upgrades in place, existing jobs/models keep their rows; 0002 downgrades."""
    engine = make_engine(db_url)
    try:
        migrate(engine, "0001")
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO sites (id, name, created_at) VALUES (1, 's', CURRENT_TIMESTAMP)")
            conn.exec_driver_sql(
                "INSERT INTO classifiers (id, site_id, name, created_at) VALUES (1, 1, 'c', CURRENT_TIMESTAMP)"
            )
            conn.exec_driver_sql(
                "INSERT INTO training_jobs (id, classifier_id, mode, params, status, attempts, max_attempts, progress,"
                " auto_promote, created_at) VALUES (1, 1, 'quick', '{}', 'queued', 0, 3, 0, false, CURRENT_TIMESTAMP)"
            )
        migrate(engine)
        with make_sessionmaker(engine)() as session:
            job = session.get(TrainingJob, 1)
            assert job is not None and job.gpu is False
        _downgrade(engine, "0001")
        assert "job_events" not in inspect(engine).get_table_names()
        migrate(engine)
        assert {"job_events", "image_label_scores"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_prediction_logs_are_packed_in_place_and_unpacked_on_downgrade(db_url: str) -> None:
    """0010 turns each row's JSON object into float32 values and a shared list of group names, and back."""
    engine = make_engine(db_url)
    try:
        migrate(engine, "0009")
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO sites (id, name, created_at) VALUES (1, 's', CURRENT_TIMESTAMP)")
            for row_id, probabilities in [
                (1, '{"hat": 0.75, "shoe": 0.25}'),
                (2, '{"shoe": 0.5, "hat": 0.5}'),
                (3, '{"cat": 1.0}'),
            ]:
                conn.exec_driver_sql(
                    "INSERT INTO prediction_logs (id, site_id, classifier, model_version, caller, route, image_name,"
                    " label, probability, anomaly, anomaly_score, probabilities, created_at) VALUES"
                    f" ({row_id}, 1, 'c', 1, 'u', 'classify', 'a.jpg', 'hat', 0.75, false, 0.1, '{probabilities}',"
                    " CURRENT_TIMESTAMP)"
                )
        migrate(engine)
        with make_sessionmaker(engine)() as session:
            rows = session.scalars(select(PredictionLog).order_by(PredictionLog.id)).all()
            assert [r.probabilities for r in rows] == [
                {"hat": 0.75, "shoe": 0.25},
                {"hat": 0.5, "shoe": 0.5},
                {"cat": 1.0},
            ]
            assert rows[0].class_list_id == rows[1].class_list_id != rows[2].class_list_id
        _downgrade(engine, "0009")
        with engine.connect() as conn:
            assert "prediction_class_lists" not in inspect(engine).get_table_names()
            back = conn.exec_driver_sql("SELECT probabilities FROM prediction_logs ORDER BY id").scalars().all()
            first = back[0] if isinstance(back[0], dict) else json.loads(back[0])  # PostgreSQL's driver parses JSON
            assert first == {"hat": 0.75, "shoe": 0.25} and list(first) == ["hat", "shoe"]
        migrate(engine)
    finally:
        engine.dispose()


def test_groups_get_the_none_of_the_above_flag_off_and_lose_it_on_downgrade(db_url: str) -> None:
    """0011 adds groups.none_of_the_above (false for existing groups); downgrading drops it and keeps the groups."""
    engine = make_engine(db_url)
    try:
        migrate(engine, "0010")
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO sites (id, name, created_at) VALUES (1, 's', CURRENT_TIMESTAMP)")
            conn.exec_driver_sql(
                "INSERT INTO classifiers (id, site_id, name, created_at) VALUES (1, 1, 'c', CURRENT_TIMESTAMP)"
            )
            conn.exec_driver_sql(
                "INSERT INTO groups (id, classifier_id, name, common, created_at)"
                " VALUES (1, 1, 'none', false, CURRENT_TIMESTAMP)"
            )
        migrate(engine)
        with make_sessionmaker(engine)() as session:
            group = session.get(Group, 1)
            assert group is not None and group.none_of_the_above is False
            group.none_of_the_above = True
            session.commit()
        _downgrade(engine, "0010")
        columns = {c["name"] for c in inspect(engine).get_columns("groups")}
        assert "none_of_the_above" not in columns and "common" in columns
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT name FROM groups").scalars().all() == ["none"]
        migrate(engine)
    finally:
        engine.dispose()


def test_cameras_get_no_owner_and_lose_the_owner_column_on_downgrade(db_url: str) -> None:
    """0012 adds cameras.agent (None: unowned, for existing cameras); downgrading drops it and keeps the cameras."""
    engine = make_engine(db_url)
    try:
        migrate(engine, "0011")
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO sites (id, name, created_at) VALUES (1, 's', CURRENT_TIMESTAMP)")
            conn.exec_driver_sql(
                "INSERT INTO cameras (id, site_id, name, created_at) VALUES (1, 1, 'c', CURRENT_TIMESTAMP)"
            )
        migrate(engine)
        with make_sessionmaker(engine)() as session:
            camera = session.get(Camera, 1)
            assert camera is not None and camera.agent is None
            camera.agent = "a1"
            session.commit()
        _downgrade(engine, "0011")
        columns = {c["name"] for c in inspect(engine).get_columns("cameras")}
        assert "agent" not in columns and "last_seen_at" in columns
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT name FROM cameras").scalars().all() == ["c"]
        migrate(engine)
    finally:
        engine.dispose()


def _downgrade(engine: Engine, revision: str) -> None:
    """Alembic downgrade on one connection, the way migrate() upgrades (SQLite: FKs off for batch copies)."""
    from alembic import command

    from camfleet_hub.core.db.session import alembic_config

    cfg = alembic_config(engine)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        with conn.begin():
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)


def test_sqlite_engine_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    eng = make_engine(f"sqlite:///{tmp_path / 'sub' / 'hub.db'}")
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() > 0
    finally:
        eng.dispose()


def _populate(engine: Engine) -> dict[str, int]:
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        site = Site(name="shop")
        s.add(site)
        s.flush()
        cam = Camera(site_id=site.id, name="door-cam")
        clf = Classifier(site_id=site.id, name="door")
        s.add_all([cam, clf, Agent(site_id=site.id, name="a1", status={"fps": {"door-cam": 2.5}})])
        s.flush()
        root = Group(classifier_id=clf.id, name="open")
        s.add(root)
        s.flush()
        child = Group(classifier_id=clf.id, name="half-open", parent_id=root.id, common=True)
        blob = Blob(sha256=SHA, size=10, width=4, height=3, format="JPEG")
        s.add_all([child, blob])
        s.flush()
        img = Image(classifier_id=clf.id, sha256=SHA, source="camera", group_id=child.id, frame_id="f1")
        frame = Frame(
            frame_id="f1",
            site_id=site.id,
            camera_id=cam.id,
            agent="a1",
            captured_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            sha256=SHA,
            width=4,
            height=3,
            reason="sample",
            predictions=[{"label": "open", "probability": 0.9}],
        )
        job = TrainingJob(classifier_id=clf.id, params={"epochs": 1})
        s.add_all([img, frame, job])
        s.flush()
        model = ModelVersion(
            classifier_id=clf.id, version=1, sha256=SHA, size=10, manifest={"classes": ["open"]}, job_id=job.id
        )
        default = ModelVersion(classifier_id=None, version=1, sha256=SHA, size=10, status=ModelStatus.PRODUCTION)
        s.add_all([model, default, DeadLetter(topic="t", reason="bad_magic", size=3)])
        s.commit()
        return {"site": site.id, "clf": clf.id, "child": child.id, "root": root.id, "job": job.id}


def test_models_round_trip(engine: Engine) -> None:
    ids = _populate(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        frame = s.execute(select(Frame)).scalar_one()
        assert frame.captured_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert frame.captured_at.tzinfo is not None
        assert frame.received_at.utcoffset() == timedelta(0)
        assert frame.predictions == [{"label": "open", "probability": 0.9}]
        img = s.execute(select(Image)).scalar_one()
        assert img.status == ImageStatus.NEW
        assert img.group is not None and img.group.parent is not None and img.group.parent.id == ids["root"]
        assert img.blob.width == 4
        job = s.get(TrainingJob, ids["job"])
        assert job is not None and job.status == "queued" and job.max_attempts == 3 and job.params == {"epochs": 1}
        models = s.execute(select(ModelVersion).order_by(ModelVersion.id)).scalars().all()
        assert [m.classifier_id for m in models] == [ids["clf"], None]
        assert models[0].manifest == {"classes": ["open"]}
        agent = s.execute(select(Agent)).scalar_one()
        assert agent.status == {"fps": {"door-cam": 2.5}} and agent.state == "online"
        assert s.execute(select(DeadLetter)).scalar_one().detail == ""


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda ids: Site(name="shop"), id="duplicate-site"),
        pytest.param(lambda ids: Classifier(site_id=ids["site"], name="door"), id="duplicate-classifier"),
        pytest.param(lambda ids: Group(classifier_id=ids["clf"], name="open"), id="duplicate-group"),
        pytest.param(lambda ids: Image(classifier_id=ids["clf"], sha256=SHA, source="upload"), id="duplicate-image"),
        pytest.param(
            lambda ids: Image(classifier_id=ids["clf"], sha256=SHA, source="camera", status="MAYBE"), id="bad-status"
        ),
        pytest.param(lambda ids: Image(classifier_id=ids["clf"], sha256="cd" * 32, source="upload"), id="missing-blob"),
        pytest.param(lambda ids: TrainingJob(classifier_id=ids["clf"], status="paused"), id="bad-job-status"),
    ],
)
def test_constraints_reject_bad_rows(engine: Engine, make) -> None:  # type: ignore[no-untyped-def]
    ids = _populate(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        s.add(make(ids))
        with pytest.raises(IntegrityError):
            s.commit()


def test_naive_timestamps_are_refused(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        s.add(Site(name="x", created_at=datetime(2026, 1, 1)))
        with pytest.raises(Exception, match="naive datetime"):
            s.commit()


def test_deleting_a_site_cascades(engine: Engine) -> None:
    ids = _populate(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        site = s.get(Site, ids["site"])
        s.delete(site)
        s.commit()
    with sessions() as s:
        assert s.execute(select(Image)).scalars().all() == []
        assert s.execute(select(Frame)).scalars().all() == []
        assert s.execute(select(Blob)).scalar_one().sha256 == SHA  # blobs are shared, never cascaded


def test_concurrent_migrations(db_url: str) -> None:
    """Several hub processes starting together: one migrates, the others find the schema ready."""
    from concurrent.futures import ThreadPoolExecutor

    engines = [make_engine(db_url) for _ in range(3)]
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(migrate, engines))
        assert "frames" in inspect(engines[0]).get_table_names()
    finally:
        for eng in engines:
            eng.dispose()
