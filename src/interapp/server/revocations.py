"""Revocations reach open event streams, in every server process.

Theory of operation:

* **Recorded with the revocation.** Whatever revokes tokens — RFC 7009, refresh-token reuse,
  the offline ``interapp admin revoke`` / ``set-password`` — goes through
  ``oauth.issue.revoke_*``, which calls :func:`record` in the same transaction: one
  ``revocations`` row per account, stamped with the *database's* clock (so the servers' clocks
  do not matter). An admin command writes the row from its own process; nothing else of it
  needs to reach the servers.
* **Polled by every process.** :class:`RevocationWatch` reads the rows of the last
  ``WINDOW_SECONDS`` every ``POLL_SECONDS`` (only while the process has open streams: one small
  indexed query), skips the ids it has already seen, and asks the :class:`EventHub` to make
  those accounts' streams check their credential again. A window rather than "ids above the
  last one" because PostgreSQL commits sequence values out of order.
* **Poked for promptness.** A revocation made inside a server (RFC 7009) pokes the watch at
  once after its commit, and with Redis the poke goes to every other process over the event
  bus; a poke is only a hint to poll now, so a lost one costs at most ``POLL_SECONDS``.
* **Streams decide for themselves.** A re-check looks up the stream's own access token (for a
  ticket: the token the ticket was minted with): revoked, or gone, closes the stream with code
  4401; expiry does not (a stream outlives its 15-minute token, as it always has).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.server.storage.schema import revocations, tokens

if TYPE_CHECKING:
    from interapp.server.events import EventHub
    from interapp.server.storage import Database

__all__ = ["POLL_SECONDS", "WINDOW_SECONDS", "RevocationWatch", "credential_revoked", "record"]

log = logging.getLogger("interapp.server.revocations")

POLL_SECONDS = 1.0
WINDOW_SECONDS = 120.0  # how far back each poll looks (a revoking transaction commits sooner)
KEEP_SECONDS = 3600.0  # rows older than this are deleted by the next revocation


def _db_now(dialect: str) -> sa.ColumnElement[float]:
    """The database's clock in Unix seconds (one clock for every writer and reader)."""
    if dialect == "postgresql":
        return sa.cast(sa.extract("epoch", sa.func.clock_timestamp()), sa.Float)
    return (sa.func.julianday("now") - 2440587.5) * 86400.0


async def record(conn: AsyncConnection, user_ids: Iterable[str]) -> None:
    """Note, inside the revoking transaction, that these accounts' tokens were revoked."""
    ids = sorted(set(user_ids))
    if not ids:
        return
    now = _db_now(conn.dialect.name)
    await conn.execute(revocations.delete().where(revocations.c.created_at < now - KEEP_SECONDS))
    await conn.execute(revocations.insert().values([{"user_id": u, "created_at": now}
                                                    for u in ids]))


_TOKEN_STATE = sa.select(tokens.c.revoked_at).where(tokens.c.hash == sa.bindparam("digest"))


async def credential_revoked(conn: AsyncConnection, digest: str | None) -> bool:
    """Whether the access token stored as ``digest`` was revoked (or is gone); None — a ticket
    minted before tokens were recorded with it — counts as revoked."""
    if digest is None:
        return True
    row = (await conn.execute(_TOKEN_STATE, {"digest": digest})).first()
    return row is None or row.revoked_at is not None


class RevocationWatch:
    """Polls ``revocations`` and hands new rows' accounts to the hub (see the module doc)."""

    def __init__(self, db: Database, hub: EventHub, interval: float = POLL_SECONDS) -> None:
        self._db, self._hub, self._interval = db, hub, interval
        self._seen: dict[int, float] = {}  # row id -> when first seen (monotonic)
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        hub.on_revocation = self._poked.set  # pokes from other processes (Redis)

    async def start(self) -> None:
        """Start polling."""
        self._task = asyncio.create_task(self._run(), name="revocation-watch")

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def poke(self) -> None:
        """A revocation was just committed here: poll now — so this process's streams are
        marked before the revoking request is answered — and tell the other processes."""
        if self._hub.has_streams:
            try:
                await self.poll()
            except Exception as exc:  # the revocation stands; the next poll tries again
                log.warning("revocation poll failed (%s)", type(exc).__name__)
                self._poked.set()
        await self._hub.announce_revocation()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._poked.wait()
            self._poked.clear()
            if not self._hub.has_streams:
                continue  # nobody to close; rows stay readable for WINDOW_SECONDS
            try:
                await self.poll()
            except Exception as exc:  # e.g. the database is away: try again next time
                if not self._failing:
                    log.warning("revocation poll failed (%s); retrying", type(exc).__name__)
                self._failing = True
            else:
                self._failing = False

    async def poll(self) -> set[str]:
        """One pass: the accounts of rows not seen before, handed to the hub."""
        async with self._db.begin() as conn:
            now = _db_now(conn.dialect.name)
            rows = (await conn.execute(
                sa.select(revocations.c.id, revocations.c.user_id)
                .where(revocations.c.created_at > now - WINDOW_SECONDS))).all()
        clock = time.monotonic()
        users = {row.user_id for row in rows if row.id not in self._seen}
        for row in rows:
            self._seen.setdefault(row.id, clock)
        for rid, seen in list(self._seen.items()):
            if clock - seen > 2 * WINDOW_SECONDS:
                del self._seen[rid]
        if users:
            self._hub.recheck(users)
        return users
