"""The server's layers point one way (issue 11): the OAuth grant modules share
``server/oauth/base.py`` and are named together only by the one grant table; the storage layer
raises storage errors, never HTTP ones, and the API layer maps them.

The import checks read the sources' ASTs (every ``import``/``from … import``, also inside
functions and ``TYPE_CHECKING`` blocks), so a lazy import cannot slip past them.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import httpx
import pytest
from server_kit import RunningServer, app_name

import interapp.errors as errors
from interapp.errors import (
    ApiError,
    BadRequest,
    ConcurrentChange,
    Conflict,
    OAuthError,
    ValueRefused,
)
from interapp.server.api.errors import to_http
from interapp.server.oauth.grants import GRANTS
from interapp.server.storage import Database
from interapp.server.storage.schema import users

SERVER = Path(__file__).resolve().parents[2] / "src" / "interapp" / "server"
GRANT_MODULES = ("rfc6749", "rfc7523", "rfc8693")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, and every ``module.name`` it imports from one."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("module", GRANT_MODULES)
def test_grant_modules_do_not_import_each_other(module: str) -> None:
    imported = _imports(SERVER / "oauth" / f"{module}.py")
    others = {f"interapp.server.oauth.{m}" for m in GRANT_MODULES if m != module}
    # also the table and the endpoint, which import every grant: that would be a cycle
    others |= {"interapp.server.oauth.grants", "interapp.server.oauth.token"}
    assert not imported & others, f"{module} imports {sorted(imported & others)}"
    assert "interapp.server.oauth.base" in {i.rsplit(".", 1)[0] for i in imported} | imported


def test_the_import_check_sees_a_lazy_import(tmp_path: Path) -> None:
    """The check itself: an import hidden in a function body is found."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from interapp.server.oauth import rfc7523\n")
    assert "interapp.server.oauth.rfc7523" in _imports(probe)


def test_one_grant_table_feeds_dispatch_and_metadata(server_url: str) -> None:
    meta = httpx.get(f"{server_url}/.well-known/oauth-authorization-server", timeout=10).json()
    assert meta["grant_types_supported"] == list(GRANTS)
    assert set(GRANTS) >= {"password", "refresh_token",
                           "urn:ietf:params:oauth:grant-type:jwt-bearer",
                           "urn:ietf:params:oauth:grant-type:token-exchange"}
    # a grant type not in the table is refused by the endpoint that dispatches on it
    r = httpx.post(f"{server_url}/oauth/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": "x"})
    assert r.status_code in (400, 401)
    assert r.json()["error"] in ("unsupported_grant_type", "invalid_client")


def _http_error_names() -> set[str]:
    return {name for name, obj in vars(errors).items()
            if isinstance(obj, type) and issubclass(obj, ApiError | OAuthError)}


def test_storage_raises_no_http_errors() -> None:
    http_names = {f"interapp.errors.{n}" for n in _http_error_names()}
    for path in sorted((SERVER / "storage").rglob("*.py")):
        bad = _imports(path) & http_names
        assert not bad, f"{path.relative_to(SERVER)} imports HTTP errors {sorted(bad)}"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> object:
    url = f"sqlite:///{tmp_path_factory.mktemp('layers') / 's.db'}"
    with RunningServer(app_name("layers"), url) as srv:
        yield srv.url


def test_storage_errors_are_mapped_to_http(db_url: str) -> None:
    """A lost uniqueness race leaves the database as ConcurrentChange (409 conflict at the API);
    a value the database cannot hold as ValueRefused (400 bad_request)."""

    async def main() -> None:
        db = Database.open(db_url)
        row = {"id": "layers-1", "username": "layers-1", "display_name": "x",
               "created_at": 0.0, "presence": "offline", "status_text": "", "last_seq": 0}
        try:
            async with db.begin() as conn:
                await conn.execute(users.delete().where(users.c.id == "layers-1"))
                await conn.execute(users.insert().values(**row))
            with pytest.raises(ConcurrentChange) as race:
                async with db.begin() as conn:
                    await conn.execute(users.insert().values(**row))
            assert isinstance(to_http(race.value), Conflict)
            assert to_http(race.value).status == 409
            if db.dialect == "postgresql":  # SQLite stores any text; PostgreSQL refuses NUL
                with pytest.raises(ValueRefused) as refused:
                    async with db.begin() as conn:
                        await conn.execute(users.insert().values(
                            **(row | {"id": "layers-2", "username": "bad\x00"})))
                mapped = to_http(refused.value)
                assert isinstance(mapped, BadRequest)
                assert mapped.to_wire()["error"] == "bad_request"
        finally:
            async with db.begin() as conn:
                await conn.execute(users.delete().where(users.c.id == "layers-1"))
            await db.close()

    asyncio.run(main())
