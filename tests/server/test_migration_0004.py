"""Migration 0004 on a database made by the previous version (revision 0003): trusted issuers
keep their keys and may not sign in to local accounts; JWT ids with an expiry out of any
assertion's reach (``Infinity``, ``NaN``, years away) — rows that could never be swept — go."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from interapp.server.storage import Database
from interapp.server.storage.db import HEAD_REVISION, MIGRATIONS, normalize_url


def _at_0003(sync_url: str, expiries: dict[str, float]) -> None:
    engine = sa.create_engine(sync_url)
    try:
        with engine.begin() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0003")
            conn.execute(sa.text("INSERT INTO trusted_issuers (issuer, jwks, jwks_url, created_at)"
                                 " VALUES ('https://arena.example', NULL, NULL, 0)"))
            for jti, expires in expiries.items():
                conn.execute(sa.text("INSERT INTO used_assertions (issuer, jti, expires_at) "
                                     "VALUES ('https://arena.example', :jti, :exp)"),
                             {"jti": jti, "exp": expires})
    finally:
        engine.dispose()


def _after(url: str) -> tuple[list[tuple[str, bool]], set[str], str]:
    async def main() -> tuple[list[tuple[str, bool]], set[str], str]:
        db = Database.open(url)  # migrates to the newest revision
        try:
            async with db.begin() as conn:
                issuers = [(r[0], bool(r[1])) for r in await conn.execute(sa.text(
                    "SELECT issuer, may_sign_in_local_accounts FROM trusted_issuers"))]
                jtis = set((await conn.execute(sa.text(
                    "SELECT jti FROM used_assertions"))).scalars())
                version = (await conn.execute(sa.text(
                    "SELECT version_num FROM alembic_version"))).scalar_one()
            return issuers, jtis, version
        finally:
            await db.close()

    return asyncio.run(main())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0004_keeps_trust_and_drops_unsweepable_jtis(backend: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    expiries = {"live": time.time() + 60, "inf": float("inf"),
                "far": time.time() + 10 * 365 * 86400}
    if backend == "postgresql":  # SQLite cannot hold a NaN (it becomes NULL)
        expiries["nan"] = float("nan")
    _at_0003(normalize_url(url)[1], expiries)
    issuers, jtis, version = _after(url)
    assert version == HEAD_REVISION
    assert issuers == [("https://arena.example", False)]
    assert jtis == {"live"}
