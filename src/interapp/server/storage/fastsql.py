"""The hot paths' statements, run without SQLAlchemy's per-execution machinery on SQLite.

Theory of operation
-------------------
A :class:`Statement` is a SQLAlchemy Core statement (so the schema stays in one place and the SQL
is generated, not hand-written) compiled once per dialect into its SQL text and the order of
its bind parameters. Executing a compiled statement through the async engine still costs
~100-200 µs of Python per statement (cache-key generation, parameter processing, result
wrapping, a greenlet switch) against ~10 µs for SQLite itself (docs/performance.md,
"Hotspots"), so on a SQLite file:

* :func:`run` executes a statement **inside the caller's transaction** directly on the
  ``sqlite3`` connection under it (``storage.sqlite_inloop``: the loop's own connection), so the
  transaction, its commit and its error mapping stay :meth:`Database.begin`'s;
* :class:`SQLiteReader` runs one-statement reads on a read-only connection of its own, in
  autocommit mode: in WAL mode a reader never waits for the writer and sees what was committed.

Everywhere else (PostgreSQL, an in-memory SQLite database) the same statements go through
SQLAlchemy as before. Only plain column types are used in these statements (strings, numbers),
whose values need no conversion either way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

from interapp.server.storage.sqlite_inloop import InLoopConnection

__all__ = ["ReadStatement", "SQLiteReader", "Statement", "run", "run_many"]

READER_CACHE_KIB = 1024  # the reader's page cache (SQLite's default is 2 MiB per connection)


class Statement:
    """A Core statement compiled once per dialect (see the module docstring)."""

    __slots__ = ("_compiled", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}

    def sql(self, dialect: Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        """The SQL text for ``dialect``, the names of its positional parameters and the values
        the statement itself gives (e.g. ``kind == "access"``)."""
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            found = (str(compiled), tuple(compiled.positiontup or ()), dict(compiled.params))
            self._compiled[dialect.name] = found
        return found

    def values(self, dialect: Dialect, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL text and its positional values for ``params``."""
        sql, names, given = self.sql(dialect)
        return sql, [params[name] if name in params else given[name] for name in names]


ReadStatement = Statement  # a SELECT, for :meth:`Database.read_first`


def _sqlite3_of(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The loop-thread ``sqlite3`` connection under ``conn``'s transaction, if it has one."""
    if conn.dialect.name != "sqlite":
        return None
    driver = conn.sync_connection.connection.driver_connection if conn.sync_connection else None
    return driver.raw_sqlite if isinstance(driver, InLoopConnection) else None


async def run(conn: AsyncConnection, statement: Statement,
              params: Mapping[str, Any]) -> tuple[list[tuple[Any, ...]], int]:
    """Execute ``statement`` in ``conn``'s transaction: its rows (plain tuples; none for a
    statement without any) and its row count."""
    raw = _sqlite3_of(conn)
    if raw is not None:
        sql, values = statement.values(conn.dialect, params)
        cursor = raw.execute(sql, values)
        try:
            rows = cursor.fetchall() if cursor.description else []
            return rows, cursor.rowcount
        finally:
            cursor.close()
    result = await conn.execute(statement.statement, dict(params))
    rows = [tuple(r) for r in result.all()] if result.returns_rows else []
    return rows, result.rowcount


async def run_many(conn: AsyncConnection, statement: Statement,
                   params: Sequence[Mapping[str, Any]]) -> None:
    """Execute ``statement`` (an INSERT without RETURNING) once per parameter set."""
    if not params:
        return
    raw = _sqlite3_of(conn)
    if raw is not None:
        sql, names, given = statement.sql(conn.dialect)
        raw.executemany(sql, [[p[n] if n in p else given[n] for n in names] for p in params])
        return
    await conn.execute(statement.statement, [dict(p) for p in params])


class SQLiteReader:
    """A read-only connection to a SQLite file, used on the event loop's thread."""

    def __init__(self, path: str, dialect: Dialect, busy_timeout_ms: int) -> None:
        self._path, self._dialect, self._busy = path, dialect, busy_timeout_ms
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={self._busy}")
            conn.execute("PRAGMA query_only=1")
            conn.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
            self._conn = conn
        return self._conn

    def first(self, statement: Statement, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of ``statement`` (a plain tuple), or None."""
        sql, values = statement.values(self._dialect, params)
        cursor = self._connection().execute(sql, values)
        try:
            row: tuple[Any, ...] | None = cursor.fetchone()
        finally:
            cursor.close()
        return row

    def close(self) -> None:
        """Close the connection (opened again on the next read)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
