"""Engine set-up and automatic migrations for SQLite and PostgreSQL.

Theory of operation: the server talks to the database only through SQLAlchemy's async engine
(``aiosqlite`` for SQLite, ``psycopg`` 3 for PostgreSQL). Before the first use the schema is
brought to the newest Alembic revision over a short-lived *synchronous* engine; when the stored
revision is already the newest, Alembic is not even imported, so start-up stays fast.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from interapp.errors import ConcurrentChange, ConfigError, UnavailableError, ValueRefused
from interapp.server.storage.fastsql import ReadStatement, SQLiteReader
from interapp.server.storage.sqlite_inloop import BUSY_TIMEOUT_MS, Checkpointer, opener

log = logging.getLogger("interapp.server.storage")
MIGRATIONS = Path(__file__).parent / "migrations"
HEAD_REVISION = "0007"
TURN_TIMEOUT = 30.0  # seconds a SQLite transaction waits for its turn (the pool's timeout)
MIGRATION_LOCK_KEY = 0x1A7E_A9F5  # pg_advisory_xact_lock key serialising schema migrations


def normalize_url(url: str) -> tuple[str, str]:
    """Return ``(async_url, sync_url)`` for a user-given database URL or SQLite path."""
    if "://" not in url:
        path = Path(url).expanduser().resolve()
        return f"sqlite+aiosqlite:///{path}", f"sqlite:///{path}"
    try:
        u = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with the URL inside
        raise ConfigError("--db is not a valid database URL") from exc
    backend = u.get_backend_name()
    if backend == "sqlite":
        db = u.database or ""
        if db and db != ":memory:":
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return (u.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False),
                u.set(drivername="sqlite").render_as_string(hide_password=False))
    if backend == "postgresql":
        pg = u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        return pg, pg
    raise ConfigError(f"unsupported database {backend!r}: use sqlite:///FILE or postgresql+psycopg://")


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_sqlite_file(path: Path) -> None:
    """Create the server's SQLite file with mode 0600, wherever it is, and tighten an existing
    one (and its ``-wal``, ``-shm``, ``-journal``) that others may read.

    It holds the signing key, the token derivation secret and the password hashes. SQLite
    creates the side files with the database file's own permissions, so a 0600 file keeps
    them 0600 too; files left readable by an older version are tightened on the next open.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create the database {path}: {exc.strerror}") from exc
    else:
        os.close(fd)
    for name in (str(path), *(f"{path}{suffix}" for suffix in SQLITE_SIDE_FILES)):
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
            if mode & 0o077:
                os.chmod(name, mode & 0o700)
                log.warning("%s was readable by other users (mode %o): now %o", name, mode,
                            mode & 0o700)
        except FileNotFoundError:
            continue
        except PermissionError as exc:  # not ours (e.g. opened by root): say so, go on
            log.warning("cannot make %s private: %s", name, exc.strerror)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # the timeout first: switching to WAL needs a lock that a concurrent first start may hold
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _begin_before_savepoint(conn: Any, _name: str | None) -> None:
    """Open the SQLite transaction before a SAVEPOINT that would otherwise be the first
    statement of one.

    ``sqlite3`` emits its implicit ``BEGIN`` only before INSERT/UPDATE/DELETE, so a savepoint
    taken first (``conn.begin_nested()`` at the start of a transaction) *is* the transaction,
    and its RELEASE commits what it wrote at once: a later failure of the same
    ``Database.begin()`` block could no longer roll it back (e.g. an RFC 7523 ``jti`` spent by a
    login that was then refused). Transactions that take no savepoint are left as they were
    (no extra statement), unlike SQLAlchemy's recipe of a BEGIN on every transaction.
    """
    driver = conn.connection.driver_connection  # InLoopConnection, or aiosqlite's
    if not getattr(driver, "in_transaction", True):
        conn.exec_driver_sql("BEGIN")


def migrate(sync_url: str) -> None:
    """Create or upgrade the schema to the newest revision (idempotent)."""
    engine = sa.create_engine(sync_url, poolclass=sa.pool.NullPool)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.begin() as conn:
            # Several processes may start at once on an empty database: one migrates, the
            # others wait for it and then find the schema current.
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                             {"key": MIGRATION_LOCK_KEY})
            elif engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            current = None
            if sa.inspect(conn).has_table("alembic_version"):
                current = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            if current == HEAD_REVISION:
                return
            from alembic import command
            from alembic.config import Config

            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except OperationalError as exc:
        raise UnavailableError(f"database unavailable: {_brief(exc)}") from exc
    finally:
        engine.dispose()


def _private_sqlite(sync_url: str) -> None:
    """Create a SQLite database file owner-only before anything opens it."""
    sqlite_file = make_url(sync_url).database if sync_url.startswith("sqlite") else None
    if sqlite_file and sqlite_file != ":memory:" and not sqlite_file.startswith("file:"):
        private_sqlite_file(Path(sqlite_file).expanduser())


def migrate_in_child(url: str, timeout: float = 300.0) -> None:
    """Run :func:`migrate` in a short-lived child process (what ``interapp serve`` does).

    Alembic and Mako (~12 MB of modules that are never unloaded) then stay out of the
    long-running server process; the server's own :meth:`Database.open` finds the schema
    current and does not import them. The URL goes through stdin, not argv (``ps`` shows argv).
    """
    sync_url = normalize_url(url)[1]
    _private_sqlite(sync_url)
    code = ("import sys; from interapp.server.storage.db import migrate, UnavailableError\n"
            "try:\n    migrate(sys.stdin.read())\n"
            "except UnavailableError as e:\n    sys.stderr.write(str(e)); sys.exit(3)\n")
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv
            [sys.executable, "-c", code], input=sync_url, text=True, capture_output=True,
            timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise UnavailableError(f"the schema migration took over {timeout:g} s") from exc
    if done.returncode == 3:
        raise UnavailableError(done.stderr.strip() or "database unavailable")
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise UnavailableError("the schema migration failed: "
                               + (lines[-1] if lines else f"exit code {done.returncode}"))


@contextmanager
def _storage_errors() -> Iterator[None]:
    """Turn the drivers' exceptions (through SQLAlchemy, or raw ``sqlite3`` ones from
    ``storage.fastsql``) into storage errors."""
    try:
        yield
    except (DataError, sqlite3.DataError) as exc:  # a value the database cannot hold
        raise ValueRefused(f"a value could not be stored: {_brief(exc)}") from exc
    except (IntegrityError, sqlite3.IntegrityError) as exc:  # lost a race with a concurrent change
        raise ConcurrentChange("the request conflicts with a concurrent change; retry") from exc
    except sqlite3.OperationalError as exc:  # e.g. locked by another process past the timeout
        raise UnavailableError(f"database unavailable: {_brief(exc)}", retry_after=1) from exc
    except (OperationalError, DBAPIError) as exc:
        if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not isinstance(
            exc, OperationalError
        ):
            raise
        raise UnavailableError(f"database unavailable: {_brief(exc)}", retry_after=1) from exc
    except PoolTimeout as exc:  # every pooled connection stayed busy for pool_timeout
        raise UnavailableError("database busy: no free connection", retry_after=1) from exc


def _brief(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", exc)).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Database:
    """The server's handle on its database: an async engine plus a clock."""

    def __init__(self, engine: AsyncEngine, checkpointer: Checkpointer | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._checkpointer = checkpointer
        # hot reads on a SQLite file: a read-only connection of their own (storage.fastsql)
        self._reader = SQLiteReader(checkpointer.path, engine.dialect, BUSY_TIMEOUT_MS) \
            if checkpointer is not None else None
        # elsewhere (PostgreSQL) a one-statement read needs no BEGIN nor the pool's ROLLBACK:
        # autocommit on the same pool makes it one round trip instead of three
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT") \
            if self.dialect == "postgresql" else engine
        # the SQLite file's one connection, held between transactions (see begin())
        self._held: AsyncConnection | None = None
        self._turn = asyncio.Lock() if checkpointer is not None else None

    @classmethod
    def open(cls, url: str, *, pool_size: int = 10) -> Database:
        """Migrate the schema if needed and open the async engine."""
        async_url, sync_url = normalize_url(url)
        _private_sqlite(sync_url)
        migrate(sync_url)
        kwargs: dict[str, Any] = {}
        if async_url.startswith("postgresql"):
            # no pre-ping: a dead connection fails one request with 503 + Retry-After and is
            # invalidated, which costs less than a round trip on every checkout
            # connect_timeout: an unreachable host answers 503 in seconds, not after TCP gives up
            kwargs = {"pool_size": pool_size, "max_overflow": pool_size, "pool_timeout": 10,
                      "connect_args": {"connect_timeout": 5}}
        checkpointer = None
        if async_url.startswith("sqlite") and ":memory:" not in async_url:
            # one connection used on the loop's thread (see sqlite_inloop): SQLite serialises
            # writers anyway, and a transaction waits for the pool, not in the busy handler
            checkpointer = Checkpointer(make_url(async_url).database or "")
            kwargs = {"pool_size": 1, "max_overflow": 0,
                      "async_creator": opener(checkpointer.path, checkpointer.restart_wal)}
        engine = create_async_engine(async_url, **kwargs)
        if engine.dialect.name == "sqlite" and checkpointer is None:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "savepoint", _begin_before_savepoint)
        return cls(engine, checkpointer.start() if checkpointer else None)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction; failures surface as storage errors, never as driver exceptions:
        :class:`ValueRefused` (a value the database cannot hold), :class:`ConcurrentChange` (a
        lost race) and :class:`UnavailableError` (an outage). The API layer maps them to HTTP
        (``interapp.server.api.errors``)."""
        with _storage_errors():
            if self._turn is None:
                async with self.engine.begin() as conn:
                    yield conn
                return
            async with self._held_connection() as conn, conn.begin():
                yield conn

    @asynccontextmanager
    async def _held_connection(self) -> AsyncIterator[AsyncConnection]:
        """The SQLite file's one connection, one transaction at a time.

        The pool has one connection anyway (``storage.sqlite_inloop``); holding it checked out
        and taking turns on a lock saves the checkout, the return and its reset on every
        transaction (~70 µs of ~105 µs for ``begin()`` + ``COMMIT``). A connection that failed
        at the database level is closed and the next transaction opens a new one.
        """
        assert self._turn is not None
        try:
            async with asyncio.timeout(TURN_TIMEOUT):
                await self._turn.acquire()
        except TimeoutError:
            raise UnavailableError("database busy: no free connection", retry_after=1) from None
        try:
            if self._held is None:
                self._held = await self.engine.connect()
            conn = self._held
            try:
                yield conn
            except (DBAPIError, sqlite3.Error):
                self._held = None
                with suppress(Exception):
                    await conn.close()
                raise
            if conn.invalidated:
                self._held = None
                with suppress(Exception):
                    await conn.close()
        finally:
            self._turn.release()

    async def read_first(self, statement: ReadStatement,
                         params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of a one-statement read, or None: on a SQLite file on the read-only
        connection of ``storage.fastsql`` (no transaction, no pool), elsewhere through the
        engine. Failures are storage errors, as for :meth:`begin`."""
        with _storage_errors():
            if self._reader is not None:
                return self._reader.first(statement, params)
            async with self._autocommit.connect() as conn:
                row = (await conn.execute(statement.statement, dict(params))).first()
            return tuple(row) if row is not None else None

    async def close(self) -> None:
        """Dispose of the pool (and stop the SQLite checkpoint thread)."""
        if self._reader is not None:
            self._reader.close()
        if self._held is not None:
            with suppress(Exception):
                await self._held.close()
            self._held = None
        await self.engine.dispose()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)

    @staticmethod
    def now() -> float:
        """Wall-clock seconds (one place, so tests can reason about it)."""
        return time.time()
