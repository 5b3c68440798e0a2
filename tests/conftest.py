"""Generic fixtures shared by every test folder: throw-away PostgreSQL databases, Redis, ports.

PostgreSQL and Redis are *required*: when they do not answer, the tests that need them fail with
a message saying so (they are never skipped). ``INTERAPP_TEST_PG`` and ``INTERAPP_TEST_REDIS``
name them; the defaults are the CI services on 127.0.0.1.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def pg_base_url() -> str:
    """The SQLAlchemy URL of the test PostgreSQL server's maintenance database."""
    return os.environ.get("INTERAPP_TEST_PG") or DEFAULT_PG


def _pg_admin() -> psycopg.Connection[Any]:
    url = make_url(pg_base_url())
    try:
        return psycopg.connect(host=url.host or "127.0.0.1", port=url.port or 5432,
                               user=url.username or "postgres", password=url.password,
                               dbname=url.database or "postgres", autocommit=True,
                               connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
    pytest.fail(f"PostgreSQL is required but {url.render_as_string(hide_password=True)} "
                f"does not answer (set INTERAPP_TEST_PG or start it): {reason}", pytrace=False)


class PgDatabases:
    """Creates uniquely named PostgreSQL databases and drops them again."""

    def __init__(self) -> None:
        self._live: set[str] = set()

    def create(self, prefix: str = "ia_test") -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = f"{prefix}_{os.getpid()}_{secrets.token_hex(5)}"
        with _pg_admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self._live.add(name)
        return make_url(pg_base_url()).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        """Drop a database made by :meth:`create` (connections are closed by force)."""
        name = make_url(url).database or ""
        if name in self._live:
            with _pg_admin() as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self._live.discard(name)

    def drop_all(self) -> None:
        for name in list(self._live):
            self.drop(make_url(pg_base_url()).set(database=name).render_as_string())


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    """Factory of throw-away PostgreSQL databases; leftovers are dropped at the end."""
    dbs = PgDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture
def pg_url(pg_databases: PgDatabases) -> Iterator[str]:
    """A fresh PostgreSQL database for one test."""
    url = pg_databases.create()
    yield url
    pg_databases.drop(url)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis URL, checked to answer (fails, never skips, when it does not)."""
    url = os.environ.get("INTERAPP_TEST_REDIS") or DEFAULT_REDIS
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
        return url
    except redis.RedisError as exc:
        reason = str(exc)
    finally:
        client.close()
    pytest.fail(f"Redis is required but {url} does not answer (set INTERAPP_TEST_REDIS or "
                f"start it): {reason}", pytrace=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Returns a function giving a currently free TCP port on 127.0.0.1."""
    return _free_port
