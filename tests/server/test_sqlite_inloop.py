"""The SQLite driver on the event loop: its WAL is checkpointed off the loop and stays bounded
under steady writes (a PASSIVE checkpoint alone never catches up with a busy writer)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from interapp.server.storage import Database, sqlite_inloop
from interapp.server.storage.schema import app_secrets


def test_the_wal_stays_bounded_under_steady_writes(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_inloop, "WAL_RESTART_BYTES", 1024 * 1024)
    path = tmp_path / "busy.db"
    wal = Path(f"{path}-wal")
    sizes: list[int] = []

    async def write_for(seconds: float) -> int:
        db = Database.open(f"sqlite:///{path}")
        written = 0
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                async with db.begin() as conn:  # ~4 KB per commit, back to back
                    await conn.execute(app_secrets.insert().values(
                        name=f"k{written}", value="x" * 4000, created_at=time.time()))
                written += 1
                if written % 500 == 0:
                    sizes.append(os.path.getsize(wal))
                    await asyncio.sleep(0)
        finally:
            await db.close()
        return written

    written = asyncio.run(write_for(4.5))
    # Without the restart the WAL only grows (it never shrank: 53 MB after 4 s here); with it,
    # it starts over about once per checkpoint interval (1 s), so it holds about a second of
    # writes at most.
    assert written > 2000, written
    shrinks = sum(1 for a, b in itertools.pairwise(sizes) if b < a)
    assert shrinks >= 2, (written, sizes)

    async def count() -> int:
        db = Database.open(f"sqlite:///{path}")
        try:
            async with db.begin() as conn:
                return int((await conn.execute(
                    sa.select(sa.func.count()).select_from(app_secrets))).scalar_one())
        finally:
            await db.close()

    assert asyncio.run(count()) >= written  # nothing lost by the checkpoints (+ the app's own)


def test_a_savepoint_taken_first_rolls_back_with_its_transaction(tmp_path: Path) -> None:
    """``sqlite3`` begins a transaction only before DML: a savepoint taken first was the whole
    transaction, and its RELEASE committed at once what the block later failed on."""
    async def main() -> list[str]:
        db = Database.open(f"sqlite:///{tmp_path / 'sp.db'}")
        try:
            with pytest.raises(RuntimeError):
                async with db.begin() as conn:
                    async with conn.begin_nested():
                        await conn.execute(app_secrets.insert().values(
                            name="spent", value="x", created_at=0.0))
                    raise RuntimeError("refused after the savepoint")
            # a savepoint inside a block that commits is kept
            async with db.begin() as conn, conn.begin_nested():
                await conn.execute(app_secrets.insert().values(
                    name="kept", value="x", created_at=0.0))
            async with db.begin() as conn:
                names = (await conn.execute(sa.select(app_secrets.c.name).where(
                    app_secrets.c.name.in_(["spent", "kept"])))).scalars().all()
            return sorted(names)
        finally:
            await db.close()

    assert asyncio.run(main()) == ["kept"]


def test_transactions_take_turns_on_the_one_held_connection(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """The file's connection is held between transactions (no pool checkout each time): they
    run one at a time, a database error drops the connection and the next transaction opens a
    new one, and a transaction that waits too long for its turn is refused as busy (503)."""
    from interapp.errors import ConcurrentChange, UnavailableError
    from interapp.server.storage import db as storage_db

    async def go() -> None:
        db = Database.open(f"sqlite:///{tmp_path / 'turns.db'}")
        order: list[str] = []
        try:
            async def write(name: str, pause: float) -> None:
                async with db.begin() as conn:
                    order.append(f"{name}+")
                    await conn.execute(app_secrets.insert().values(
                        name=name, value="v", created_at=time.time()))
                    await asyncio.sleep(pause)  # another transaction must not start meanwhile
                    order.append(f"{name}-")

            await asyncio.gather(write("a", 0.05), write("b", 0.0), write("c", 0.0))
            assert order == ["a+", "a-", "b+", "b-", "c+", "c-"]
            first = db._held
            assert first is not None
            async with db.begin() as conn:
                pass
            assert db._held is first  # the same connection, not a checkout each time
            with pytest.raises(ConcurrentChange):  # a duplicate primary key: a database error
                async with db.begin() as conn:
                    await conn.execute(app_secrets.insert().values(
                        name="a", value="again", created_at=time.time()))
            assert db._held is None
            async with db.begin() as conn:  # a new connection, and the data is all there
                count = (await conn.execute(sa.select(sa.func.count()).select_from(
                    app_secrets).where(app_secrets.c.name.in_(["a", "b", "c"])))).scalar()
            assert count == 3

            monkeypatch.setattr(storage_db, "TURN_TIMEOUT", 0.1)
            slow = asyncio.create_task(write("slow", 0.5))
            await asyncio.sleep(0.02)
            with pytest.raises(UnavailableError):
                async with db.begin():
                    pass
            await slow
        finally:
            await db.close()

    asyncio.run(go())
