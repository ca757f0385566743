"""SQL persistence: models, engine/session helpers and the Alembic migrations shipped with the package."""
