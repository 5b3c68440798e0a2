"""Fixtures for the vault tests: a SQLite file or a throw-away PostgreSQL database per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from vault_helpers import PG_DSN, PG_URL, Backend

from interapp.vault import Vault


def _pg_admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 (user postgres, db test) is not reachable; "
                    f"the PostgreSQL vault tests need it: {exc}", pytrace=False)


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A uniquely named temporary PostgreSQL database, dropped afterwards; yields its URL."""
    name = f"interapp_vault_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.format(name=name)
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each core test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "vault.db"
        return Backend("sqlite", str(path), f"sqlite:///{path}")
    url = request.getfixturevalue("pg_database")
    return Backend("postgresql", url, url)


@pytest.fixture
def vault(backend: Backend) -> Iterator[Vault]:
    """An open vault on the current backend."""
    with backend.open() as v:
        yield v
