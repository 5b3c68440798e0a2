"""A server that does not use an optional part does not import it: without ``--redis`` no Redis
client, before the first JWT or JWKS request no joserfc/cryptography (the signing key is made
on first use), before the first sign-in or device page no Jinja2, ``interapp serve`` none of
the host's commands (vault, httpx), and a SQLite server not the PostgreSQL dialect (2 MB).
Together about 27 MB of the idle server's memory (docs/performance.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECK = """
import asyncio, sys
from interapp.cli import main
main._register(["serve"])
from interapp.server.app import create_app
from interapp.server.core import AppServer
from interapp.server.settings import ServerSettings

settings = ServerSettings(app="imports", db_url=sys.argv[1], issuer="http://127.0.0.1:1",
                          redis_url=None)
create_app(settings)

async def start_and_stop():
    srv = AppServer(settings)
    await srv.start()
    await srv.stop()

asyncio.run(start_and_stop())
heavy = ("redis", "joserfc", "cryptography", "httpx", "interapp.vault", "interapp.host.facade",
         "jinja2", "sqlalchemy.dialects.postgresql")
print(" ".join(m for m in heavy if m in sys.modules))
"""


def test_an_idle_server_imports_no_optional_part(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'i.db'}"
    first = subprocess.run([sys.executable, "-c", CHECK, url], capture_output=True, text=True,
                           timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    # a first start runs the migrations: Alembic imports every dialect's DDL support
    loaded = set(first.stdout.split()) - {"sqlalchemy.dialects.postgresql"}
    assert loaded == set(), f"imported by a first start: {loaded}"
    out = subprocess.run([sys.executable, "-c", CHECK, url], capture_output=True, text=True,
                         timeout=120, check=False)  # every later start only reads it
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported by an idle server: {out.stdout.strip()}"


def test_the_signing_key_still_works_once_needed(tmp_path: Path) -> None:
    code = CHECK.replace('heavy = (', 'from interapp.server.keys import public_jwks\n'
                         'async def sign():\n'
                         '    srv = AppServer(settings)\n'
                         '    await srv.start()\n'
                         '    first = await srv.signing_key()\n'
                         '    assert public_jwks(first)["keys"][0]["kty"] == "EC"\n'
                         '    again = AppServer(settings)\n'
                         '    assert (await again.signing_key()).kid == first.kid\n'
                         '    await srv.stop()\n'
                         '    await again.stop()\n'
                         'asyncio.run(sign())\nheavy = (')
    out = subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path / 'k.db'}"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "joserfc" in out.stdout.split()


MIGRATE_THEN_OPEN = """
import asyncio, sys
from interapp.server.storage.db import Database, HEAD_REVISION, migrate_in_child
migrate_in_child(sys.argv[1])
db = Database.open(sys.argv[1])
async def version():
    async with db.engine.connect() as conn:
        return (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).scalar()
print(asyncio.run(version()) == HEAD_REVISION, "alembic" in sys.modules, "mako" in sys.modules)
"""


def test_serve_migrates_in_a_child_so_alembic_stays_out_of_the_server(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    out = subprocess.run([sys.executable, "-c", MIGRATE_THEN_OPEN, url], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "False"]
    assert (tmp_path / "fresh.db").stat().st_mode & 0o077 == 0  # still owner-only


def test_a_migration_that_cannot_reach_the_database_is_a_clear_error() -> None:
    from interapp.errors import UnavailableError
    from interapp.server.storage.db import migrate_in_child

    try:
        migrate_in_child("postgresql+psycopg://postgres@127.0.0.1:1/none", timeout=60)
    except UnavailableError as exc:
        assert "database unavailable" in str(exc) and "127.0.0.1" in str(exc)
    else:
        raise AssertionError("an unreachable database must raise UnavailableError")
