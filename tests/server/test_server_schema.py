"""The Alembic migrations build exactly the tables ``storage/schema.py`` describes, on SQLite and
PostgreSQL, and the newest one can be taken back and applied again."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from interapp.server.storage.db import HEAD_REVISION, MIGRATIONS, migrate, normalize_url
from interapp.server.storage.schema import metadata


def _differences(sync_url: str) -> list[object]:
    engine = sa.create_engine(sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()


def _alembic(sync_url: str, action: str, revision: str) -> None:
    engine = sa.create_engine(sync_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = conn
            getattr(command, action)(cfg, revision)
    finally:
        engine.dispose()


def test_migrations_match_the_schema_and_the_newest_reverts(db_url: str) -> None:
    _, sync_url = normalize_url(db_url)
    migrate(sync_url)
    assert _differences(sync_url) == []
    _alembic(sync_url, "downgrade", "-1")
    assert _differences(sync_url) != []  # the newest revision really changed something
    _alembic(sync_url, "upgrade", "head")
    assert _differences(sync_url) == []
    engine = sa.create_engine(sync_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() \
            == HEAD_REVISION
    engine.dispose()
