"""One-statement reads for the hot paths, without SQLAlchemy's per-execution machinery.

Theory of operation: a :class:`ReadStatement` is a SQLAlchemy Core ``SELECT`` (so the schema
stays in one place and the SQL is generated, not hand-written) compiled once per dialect into
its SQL text and the order of its bind parameters. :class:`SQLiteReader` runs such statements on
a read-only ``sqlite3`` connection of its own, on the event loop's thread, in autocommit mode:
in WAL mode a reader never waits for the writer and sees exactly what was committed, and one
primary-key SELECT takes ~10 µs there against ~200 µs through the async engine (docs/
performance.md, "Hotspots"). Only reads go this way; every write still goes through
:meth:`interapp.server.storage.Database.begin`. PostgreSQL (and in-memory SQLite) use the
engine, with the statement still built once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select

__all__ = ["ReadStatement", "SQLiteReader"]

READER_CACHE_KIB = 1024  # the reader's page cache (SQLite's default is 2 MiB per connection)


class ReadStatement:
    """A ``SELECT`` compiled once per dialect (see the module docstring)."""

    __slots__ = ("_compiled", "statement")

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}

    def sql(self, dialect: Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        """The SQL text for ``dialect``, the names of its positional parameters and the values
        the statement itself gives (e.g. ``kind == "access"``)."""
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            found = (str(compiled), tuple(compiled.positiontup or ()), dict(compiled.params))
            self._compiled[dialect.name] = found
        return found


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

    def first(self, statement: ReadStatement, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of ``statement`` (a plain tuple), or None."""
        sql, names, given = statement.sql(self._dialect)
        values = [params[name] if name in params else given[name] for name in names]
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
