"""Fixtures of the server suite: a storage-parametrized database and a real running server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_kit import Client, RunningServer, app_name, make_client


@pytest.fixture(autouse=True)
def _interapp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing a test does may touch the real data folder."""
    monkeypatch.setenv("INTERAPP_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           pg_databases: Any) -> Iterator[str]:
    """One database per module and backend: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'server.db'}"
        return
    url = pg_databases.create("ia_server")
    yield url
    pg_databases.drop(url)


@pytest.fixture(scope="module")
def server(db_url: str) -> Iterator[RunningServer]:
    """The real server on ``db_url``, one per module and backend."""
    with RunningServer(app_name("arena"), db_url) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Client:
    """A confidential OAuth client of ``server``."""
    return make_client(server.db_url)


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    """An HTTP client on ``server``'s real socket."""
    with server.client() as c:
        yield c
