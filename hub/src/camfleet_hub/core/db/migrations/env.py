"""Alembic environment: runs on the connection handed over by migrate(), or on ``-x url=...`` from the CLI."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from camfleet_hub.core.db import tables  # noqa: F401 - the whole schema on Base.metadata
from camfleet_hub.core.db.base import Base
from camfleet_hub.core.db.session import make_engine

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_online() -> None:
    """Migrate on the given connection (programmatic) or on a fresh engine from ``-x url=``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database with -x url=<sqlalchemy url>")
    engine = make_engine(url)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
