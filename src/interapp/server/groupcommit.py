"""Group commit for messages: sends that arrive together share one transaction.

Theory of operation
-------------------
Every message costs a transaction: a ``BEGIN``, its own statements, the ``UPDATE`` of the
accounts' ``last_seq``, the ``INSERT`` of the events and a ``COMMIT`` that writes the touched
pages to the log. Under load most of that is per *transaction*, not per message, and on SQLite,
where one connection serialises every transaction of the process, the sends wait for each other
anyway. So :meth:`SendQueue.submit` puts a send on a queue, and a runner task takes up to
:data:`MAX_BATCH` queued sends at a time until the queue is empty. On SQLite one runner works
at a time (there is one connection); on PostgreSQL up to :data:`PG_RUNNERS` batches overlap, so
that a batch waiting for the database's round trips does not hold back the next one. A batch:

1. one transaction for the whole batch; each send is checked (its ``check``, e.g. the stream's
   token looked up again, so a revoked token stops sending at once) and stored with
   :func:`interapp.server.social.prepare_message`;
2. the events of every stored message are appended with **one** call of
   :func:`interapp.server.events.append_events`, which locks the accounts in id order once per
   batch, so concurrent batches of other processes on PostgreSQL never deadlock;
3. after the commit, the events are published once, then every sender gets its answer.

A send that is refused (an :class:`~interapp.errors.ApiError`: not a buddy, a token no longer
valid, a ``client_msg_id`` reused for another message) has written nothing, so it is answered
with its error and the others go on. When the transaction itself fails, nothing of it is kept:

* PostgreSQL broke a deadlock (two overlapping batches inserting the same retried
  ``client_msg_id`` values in opposite orders) — the batch runs again, up to three times;
* the database refused a value (400) or a write conflicted (409) — the batch runs again one
  send per transaction, so only the send it was about gets the error;
* anything else (the database went away: 503) — every send of the batch gets the error, and
  each client retries with its ``client_msg_id``, which never makes a duplicate.

At a paced rate a batch holds one send, and it costs what a lone transaction did; when sends
come steadily (the last batch committed under :data:`BUSY_GAP` ago) a new batch first waits
:data:`COMMIT_DELAY` so that a few share it. The batch runs
in a task of its own, so a sender that goes away meanwhile (a stream cut, an HTTP client gone)
does not cancel the others' commit, nor its own: its message is stored and published anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.errors import ApiError, ConcurrentChange, UnavailableError, ValueRefused
from interapp.server import social
from interapp.server.accounts import User
from interapp.server.events import EventHub, append_events
from interapp.server.observability import SEND_BATCH
from interapp.server.storage import Database

log = logging.getLogger("interapp.server.groupcommit")

MAX_BATCH = 32
"""Sends per transaction at most: enough to share the commit, short enough that one batch
(which, on SQLite, runs without yielding the event loop) stays around ten milliseconds."""

DEADLOCK_ATTEMPTS = 3
"""Runs of a batch that PostgreSQL aborted to break a deadlock (see :func:`_deadlocked`)."""

PG_RUNNERS = 4
"""Batches in flight at once on PostgreSQL (well under the pool's 10 connections)."""

COMMIT_DELAY = 0.0005
"""Seconds a batch waits for company when the previous one committed less than
:data:`BUSY_GAP` ago (PostgreSQL's ``commit_delay`` and ``commit_siblings``, in spirit): at a
steady moderate rate each send would otherwise be a transaction of its own, which costs about
twice the CPU per message of a shared one and queues the next sends behind it."""

BUSY_GAP = 0.002
"""Seconds since the last commit under which sends count as arriving steadily."""

Check = Callable[[AsyncConnection], Awaitable[User]]
"""Checks a send inside the batch's transaction and returns its sender (or raises ApiError)."""


@dataclass(eq=False, slots=True)
class _Send:
    sender: User | Check
    to: str
    body: str
    client_msg_id: str
    future: asyncio.Future[dict[str, Any]]
    items: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    result: dict[str, Any] | None = None


class SendQueue:
    """The process's queue of messages waiting for a transaction (see the module docstring)."""

    def __init__(self, db: Database, hub: EventHub, *, max_batch: int = MAX_BATCH,
                 runners: int | None = None) -> None:
        self._db, self._hub, self._max = db, hub, max_batch
        self._most = runners or (PG_RUNNERS if db.dialect == "postgresql" else 1)
        self._queue: list[_Send] = []
        self._runners: set[asyncio.Task[None]] = set()
        self._closing = False
        self.batches = 0  # transactions run, for tests and the benchmarks
        self.largest = 0  # most sends one transaction carried
        self._last_commit = float("-inf")  # loop time of the last batch's end

    async def submit(self, sender: User | Check, to: str, body: str,
                     client_msg_id: str) -> dict[str, Any]:
        """Send ``body`` to the buddy ``to``; return the stored message once it is committed
        and published, or raise the error that refused it.

        ``sender`` is the account already authenticated, or a :data:`Check` run inside the
        batch's transaction that returns it.
        """
        if self._closing:
            raise UnavailableError("the server is stopping", retry_after=1)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)  # its sender may have gone: never log it unread
        self._queue.append(_Send(sender, to, body, client_msg_id, future))
        if len(self._runners) < self._most:
            runner = asyncio.create_task(self._run())
            self._runners.add(runner)
            # also here: a runner cancelled before its first step never reaches its finally
            runner.add_done_callback(self._runners.discard)
        # shielded: the batch answers this future whether or not its sender still waits
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Refuse new sends (503) and wait for the batches under way to finish."""
        self._closing = True
        while self._runners:  # wait, not gather: cancelling close() must not cancel them
            await asyncio.wait(set(self._runners))

    async def _run(self) -> None:
        batch: list[_Send] = []
        try:
            loop = asyncio.get_running_loop()
            if loop.time() - self._last_commit < BUSY_GAP and len(self._queue) < self._max:
                await asyncio.sleep(COMMIT_DELAY)  # sends arrive steadily: let a few more join
            while self._queue:
                batch, self._queue = self._queue[:self._max], self._queue[self._max:]
                await self._commit(batch)
                self._last_commit = loop.time()
        except asyncio.CancelledError:  # the process is stopping: answer who waits
            stopping = UnavailableError("the server is stopping", retry_after=1)
            for send in [*batch, *self._queue]:
                _answer(send, stopping)
            self._queue = []
            raise
        finally:
            # at once, not in a done-callback: a send queued between this runner's last look
            # at the queue and such a callback would find the runner slots full and wait forever
            self._runners.discard(asyncio.current_task())

    async def _commit(self, batch: list[_Send], attempts: int = DEADLOCK_ATTEMPTS) -> None:
        """Store ``batch`` in one transaction and answer every send of it."""
        self.batches += 1
        self.largest = max(self.largest, len(batch))
        try:
            SEND_BATCH.observe(len(batch))
            async with self._db.begin() as conn:
                for send in batch:
                    await self._prepare(conn, send)
                published = await append_events(
                    conn, [item for send in batch for item in send.items])
        except UnavailableError as exc:
            waiting = [send for send in batch if not send.future.done()]
            if attempts > 1 and _deadlocked(exc) and waiting:
                # two overlapping batches (PostgreSQL) inserted the same retried
                # client_msg_ids in opposite orders; nothing was kept: run it again
                log.info("message batch of %d deadlocked; retrying", len(waiting))
                return await self._commit(waiting, attempts - 1)
            for send in batch:
                _answer(send, exc)
            return
        except (ApiError, ValueRefused, ConcurrentChange) as exc:  # refused by the database
            waiting = [send for send in batch if not send.future.done()]
            if len(waiting) > 1:  # find the one it was about: each alone
                for send in waiting:
                    await self._commit([send], attempts)
                return
            for send in batch:
                _answer(send, exc)
            return
        except Exception as exc:  # a bug: every send gets it (HTTP 500 / send_failed)
            for send in batch:
                _answer(send, exc)
            return
        try:
            await self._hub.publish(published)
        except Exception:  # committed: the streams catch up from the table on their next wake
            log.exception("publishing a batch of %d messages failed", len(batch))
        for send in batch:
            if not send.future.done():
                assert send.result is not None
                send.future.set_result(send.result)

    @staticmethod
    async def _prepare(conn: AsyncConnection, send: _Send) -> None:
        """Check and store one send; an ApiError answers it (it wrote nothing)."""
        send.items, send.result = [], None  # a batch may run again (deadlock, isolation)
        try:
            sender = send.sender if isinstance(send.sender, User) else await send.sender(conn)
            send.result, send.items = await social.prepare_message(
                conn, sender, send.to, send.body, send.client_msg_id)
        except ApiError as exc:
            send.future.set_exception(exc)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as read (its sender may have been cancelled meanwhile)."""
    if not future.cancelled():
        future.exception()


def _answer(send: _Send, exc: BaseException) -> None:
    """Fail ``send`` with ``exc`` unless it was answered already."""
    if not send.future.done():
        send.future.set_exception(exc)


def _deadlocked(exc: BaseException) -> bool:
    """Whether PostgreSQL aborted the transaction to break a deadlock or a serialization
    conflict (SQLSTATE 40P01 / 40001): safe to run again, nothing of it was kept."""
    cause: BaseException | None = exc
    while cause is not None:
        if getattr(getattr(cause, "orig", None), "sqlstate", None) in ("40P01", "40001"):
            return True
        cause = cause.__cause__
    return False
