"""SQLite for the async engine without a thread hop per DBAPI call.

Theory of operation
-------------------
SQLAlchemy's ``aiosqlite`` dialect runs every DBAPI call (``cursor()``, ``execute()``,
``fetchall()``, ``close()``, ``commit()``, the pool's reset ``rollback()``) as a separate job on
the connection's own thread: a queue put, a future, a ``call_soon_threadsafe`` and a greenlet
switch each. Measured here, that was ≈ 700 µs of CPU for ``begin()`` + one primary-key SELECT,
against ≈ 40 µs for the statement itself, and it made every SQLite request an order of magnitude
slower than the work it does.

This module hands SQLAlchemy's aiosqlite *adapter* (reused as it is, with its type handling and
error translation) a driver connection with aiosqlite's interface whose coroutines run the
``sqlite3`` call at once, on the event loop's thread, and never suspend. A statement on a local
SQLite file in WAL mode takes microseconds, so this blocks the loop for less than the thread
hand-off it replaces. No library does this: aiosqlite is thread-based by design.

Checkpoints are moved off the loop: the loop's connection has ``wal_autocheckpoint=0``, and a
:class:`Checkpointer` thread runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its own
every second (SQLite releases the GIL while it copies pages). Left to the committing
connection, a checkpoint (with its fsync) stalled the loop for 4-6 ms every few hundred
messages (p99 of a message transaction 4.3 ms → 0.7 ms without). A PASSIVE pass never waits,
so under steady writes it never catches up with the end of the log, and SQLite only starts the
WAL file over once a checkpoint has caught up (measured: 53 MB of WAL in 4 s of back-to-back
commits). So when the thread sees the file past ``WAL_RESTART_BYTES`` it raises a flag, and the
loop's connection, right after its next commit, runs a ``TRUNCATE`` checkpoint itself: the only
writer, between two transactions, with most frames already copied by the thread — a short,
bounded pause instead of a file that grows for as long as writes keep coming.

What keeps it safe: the engine is given **one** connection (``pool_size=1``), so transactions of
one process never interleave on the file — a second transaction waits, asynchronously, for the
pool instead of spinning in SQLite's busy handler on the loop's thread. Code must not await
slow things inside ``Database.begin()`` (the server hashes passwords and talks to Redis outside
its transactions). Another *process* writing the same file (an ``interapp admin`` command) is
waited for by ``busy_timeout``; scale-out with several processes uses PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

BUSY_TIMEOUT_MS = 5000
CHECKPOINT_SECONDS = 1.0
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # the WAL file is cut back to this after a checkpoint
WAL_RESTART_BYTES = 32 * 1024 * 1024  # past this, a TRUNCATE checkpoint starts the WAL over

log = logging.getLogger("interapp.server.storage")


class InLoopCursor:
    """An aiosqlite-shaped cursor over a ``sqlite3.Cursor``; every coroutine completes at once."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InLoopCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        """The DBAPI description of the last statement."""
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement."""
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        """Row id of the last inserted row."""
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        """Rows fetched by ``fetchmany()`` by default."""
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InLoopCursor:
        """Run one statement."""
        self._cursor.execute(sql, () if parameters is None else parameters)
        return self

    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> InLoopCursor:
        """Run one statement for each parameter set."""
        self._cursor.executemany(sql, seq)
        return self

    async def fetchone(self) -> Any:
        """The next row, or None."""
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` rows."""
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        """Every remaining row."""
        return self._cursor.fetchall()

    async def close(self) -> None:
        """Close the cursor."""
        self._cursor.close()

    async def setinputsizes(self, *sizes: Any) -> None:
        """Accepted and ignored, as by ``sqlite3``."""

    async def nextset(self) -> None:
        """SQLite has one result set per statement."""


class InLoopConnection:
    """An aiosqlite-shaped connection over a ``sqlite3.Connection`` used on the loop's thread."""

    def __init__(self, connection: sqlite3.Connection,
                 restart_wal: threading.Event | None = None) -> None:
        self._connection: sqlite3.Connection | None = connection  # aiosqlite's attribute name
        self._restart_wal = restart_wal

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise sqlite3.OperationalError("connection closed")
        return self._connection

    @property
    def in_transaction(self) -> bool:
        """True while a transaction is open on the file (``sqlite3``'s own flag)."""
        return self._conn.in_transaction

    @property
    def raw_sqlite(self) -> sqlite3.Connection:
        """The ``sqlite3`` connection itself (``storage.fastsql`` runs hot statements on it)."""
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        """The ``sqlite3`` transaction mode."""
        return self._conn.isolation_level

    def cursor(self) -> InLoopCursor:
        """A new cursor (SQLAlchemy awaits its ``__aenter__``)."""
        return InLoopCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InLoopCursor:
        """Run one statement on a new cursor."""
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        """Commit the transaction (then start the WAL over, when the Checkpointer asks)."""
        self._conn.commit()
        if self._restart_wal is not None and self._restart_wal.is_set():
            self._restart_wal.clear()
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    async def rollback(self) -> None:
        """Roll the transaction back."""
        self._conn.rollback()

    async def create_function(self, name: str, num_params: int, func: Callable[..., Any],
                              **kwargs: Any) -> None:
        """Register a SQL function."""
        self._conn.create_function(name, num_params, func, **kwargs)

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def stop(self) -> None:
        """Terminate: the same as closing, as nothing runs elsewhere."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def opener(path: str, restart_wal: threading.Event | None = None) -> Callable[[], Any]:
    """An ``async_creator`` for ``create_async_engine`` opening ``path`` in WAL mode
    (``restart_wal``: the flag a :class:`Checkpointer` raises)."""

    async def open_connection() -> InLoopConnection:
        conn = sqlite3.connect(path, check_same_thread=False)  # deferred transactions
        # the timeout first: switching to WAL needs a lock another process may hold
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer thread does it
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        return InLoopConnection(conn, restart_wal)

    return open_connection


class Checkpointer:
    """A daemon thread copying the WAL back into the database file, off the event loop."""

    def __init__(self, path: str, interval: float = CHECKPOINT_SECONDS) -> None:
        self.path, self.interval = path, interval
        self.restart_wal = threading.Event()  # raised for the loop's connection (see above)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)

    def start(self) -> Checkpointer:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread after one last checkpoint."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path)
        except sqlite3.Error as exc:
            log.error("WAL checkpoints stopped: cannot open %s: %s", self.path, exc)
            return
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            while True:
                stopping = self._stop.wait(self.interval)
                try:
                    self.checkpoint(conn)
                except sqlite3.Error as exc:  # e.g. the file went away: try again later
                    log.warning("WAL checkpoint failed: %s", exc)
                if stopping:
                    return
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        """One pass: PASSIVE (never waits); past ``WAL_RESTART_BYTES``, ask the loop's
        connection to start the WAL over after its next commit."""
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        try:
            size = os.path.getsize(f"{self.path}-wal")
        except OSError:
            return
        if size > WAL_RESTART_BYTES:
            self.restart_wal.set()
