"""The vault's database connection: SQLite file or PostgreSQL URL, and its transactions.

Theory of operation
-------------------
A path (or ``sqlite://`` URL) means a SQLite file. The file is created by us, empty, with mode
0600 *before* SQLite touches it; SQLite gives its ``-wal``/``-shm`` side files the mode of the
database file, and :meth:`Database.tighten` re-checks all three. An existing file that others
can read is tightened to 0600 too. The connection runs in WAL mode with ``synchronous=NORMAL``
(fast, crash-safe for the application) and ``secure_delete`` (freed pages are zeroed).

The stdlib driver's own transaction handling is switched off (``isolation_level=None``) and
SQLAlchemy's *begin* hook emits the ``BEGIN`` itself: nothing for reads (each statement is
its own snapshot, no lock taken), ``BEGIN IMMEDIATE`` for writes (the write lock is taken up
front, so read-then-write sequences such as compare-and-swap and the audit chain are
serialised across processes). A *durable* write also switches that connection to
``synchronous=FULL`` for its commit, so the commit has reached the disk when it returns.

On PostgreSQL writes take a transaction-scoped advisory lock, which serialises the audit
chain the same way; commits are durable by default.

Hot-path statements are :class:`Prepared`: a Core statement compiled once per dialect and run
on the DBAPI cursor of the current connection (inside its SQLAlchemy-managed transaction).
On SQLite that is several times cheaper than a full Core execution, and it is what keeps
``get_link`` + ``read_credential`` well under a millisecond.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, cast

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from interapp.errors import VaultError
from interapp.extras import require

#: The location of a vault that lives in memory only (tests, short-lived tools).
MEMORY: Final = ":memory:"
_BEGIN_KEY: Final = "interapp_vault_begin"
_ADVISORY_LOCK: Final = 0x1A7E_5A17
_SIDE_FILES: Final = ("", "-wal", "-shm", "-journal")


def _private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600, or tighten an existing file to 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
    else:
        os.close(fd)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000",
                   "secure_delete=ON", "foreign_keys=ON", "trusted_schema=OFF"):
        dbapi_conn.execute(f"PRAGMA {pragma}")


def _sqlite_begin(conn: Connection) -> None:
    mode = conn.info.pop(_BEGIN_KEY, "")
    if mode:
        conn.connection.driver_connection.execute(f"BEGIN {mode}")  # type: ignore[union-attr]


class Prepared:
    """A Core statement compiled once per dialect and run straight on the DBAPI cursor."""

    __slots__ = ("_compiled", "_stmt")

    def __init__(self, stmt: ClauseElement) -> None:
        self._stmt = stmt
        self._compiled: dict[str, tuple[str, list[str] | None, dict[str, Any]]] = {}

    def _sql(self, conn: Connection) -> tuple[str, list[str] | None, dict[str, Any]]:
        name = conn.dialect.name
        found = self._compiled.get(name)
        if found is None:
            compiled = cast(SQLCompiler, self._stmt.compile(dialect=conn.dialect))
            order = list(compiled.positiontup or []) if compiled.positional else None
            found = (str(compiled), order, dict(compiled.params))
            self._compiled[name] = found
        return found

    def run(self, conn: Connection, params: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """Execute in ``conn``'s transaction: ``(rows as dicts, rowcount)``."""
        sql, order, defaults = self._sql(conn)
        values = {**defaults, **params}
        args: Any = tuple(values[k] for k in order) if order is not None else values
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, args)
            rows: list[dict[str, Any]] = []
            if cursor.description:
                names = [d[0] for d in cursor.description]
                rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            return rows, cursor.rowcount
        except Exception as exc:
            if isinstance(exc, conn.dialect.loaded_dbapi.Error):
                raise DBAPIError.instance(sql, args, exc, conn.dialect.loaded_dbapi.Error) from exc
            raise
        finally:
            cursor.close()


def _wrap(exc: DBAPIError) -> VaultError:
    return VaultError(f"vault database error: {type(exc.orig).__name__}: {exc.orig}")


class Database:
    """An engine plus the read/write transaction discipline described above."""

    def __init__(self, target: str | Path) -> None:
        self.path: Path | None = None
        url = self._url(target)
        self.url = url
        self.is_sqlite = url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if self.path is None:  # in memory: one connection, kept for the vault's life
                self.engine: Engine = create_engine(
                    "sqlite+pysqlite://", poolclass=StaticPool,
                    connect_args={"check_same_thread": False})
            else:
                _private_file(self.path)
                self.engine = create_engine(url)
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        elif url.get_backend_name() == "postgresql":
            require("postgres", "a vault in PostgreSQL")
            self.engine = create_engine(url, pool_size=2, max_overflow=8)
        else:
            raise VaultError(f"unsupported vault database {url.get_backend_name()!r}")

    def _url(self, target: str | Path) -> URL:
        if target == MEMORY:
            return make_url("sqlite+pysqlite://")
        if isinstance(target, Path) or "://" not in target:
            self.path = Path(target).expanduser().absolute()
            return URL.create("sqlite+pysqlite", database=str(self.path))
        url = make_url(target)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            self.path = Path(url.database or "").expanduser().absolute()
            url = url.set(database=str(self.path))
        return url

    @property
    def location(self) -> str:
        """The file path, or the URL without its password."""
        if self.path is not None:
            return str(self.path)
        if self.is_sqlite:
            return MEMORY
        return self.url.render_as_string(hide_password=True)

    def tighten(self) -> None:
        """Make sure the SQLite file and its side files are mode 0600."""
        if self.path is None:
            return
        for suffix in _SIDE_FILES:
            side = Path(f"{self.path}{suffix}")
            try:
                if stat.S_IMODE(side.stat().st_mode) & 0o077:
                    side.chmod(0o600)
            except FileNotFoundError:
                continue

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads; SQLite takes no lock, nothing is committed."""
        try:
            with self.engine.connect() as conn:
                yield conn
                conn.rollback()
        except DBAPIError as exc:
            raise _wrap(exc) from exc

    @contextmanager
    def write(self, *, durable: bool = False) -> Iterator[Connection]:
        """A serialised write transaction, committed on success, rolled back on error."""
        try:
            with self.engine.connect() as conn, self._mode(conn, durable), conn.begin():
                if not self.is_sqlite:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK})
                yield conn
        except DBAPIError as exc:
            raise _wrap(exc) from exc

    @contextmanager
    def _mode(self, conn: Connection, durable: bool) -> Iterator[None]:
        """SQLite: ask for ``BEGIN IMMEDIATE`` and, if durable, ``synchronous=FULL``."""
        if not self.is_sqlite:
            yield
            return
        driver = conn.connection.driver_connection if durable else None
        conn.info[_BEGIN_KEY] = "IMMEDIATE"
        try:
            if driver is not None:
                driver.execute("PRAGMA synchronous=FULL")
            yield
        finally:
            conn.info.pop(_BEGIN_KEY, None)
            if driver is not None:
                driver.execute("PRAGMA synchronous=NORMAL")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
