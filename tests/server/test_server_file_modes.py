"""The server's SQLite database holds the signing key, the token derivation secret and the
password hashes: it and its ``-wal``/``-shm`` files are created 0600 wherever they are (not only
in the data folder, whose directories are 0700), and an existing readable one is tightened."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from server_kit import INTERAPP, Endpoint, app_name, login, make_client, serve


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    """The usual umask 022, which gave the database 0644 before."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def side_files(db: Path) -> list[Path]:
    return [db, Path(f"{db}-wal"), Path(f"{db}-shm")]


def test_a_database_outside_the_data_folder_is_created_0600(tmp_path: Path) -> None:
    outside = tmp_path / "srv" / "var"  # not under INTERAPP_HOME, created by interapp
    db = outside / "arena.db"
    with umask(0o022), serve(app_name("modes"), f"sqlite:///{db}", None, None,
                             tmp_path / "serve.log", home=tmp_path / "home") as srv:
        handle = Endpoint(srv.url, srv.ws_url, f"sqlite:///{db}")
        with httpx.Client(base_url=srv.url, timeout=10) as http:
            login(handle, http, make_client(handle.db_url))  # writes: the WAL is in use
        for path in side_files(db):
            assert path.exists(), path
            assert mode(path) == 0o600, (path, oct(mode(path)))
    assert mode(outside) == 0o700


def test_admin_commands_create_it_0600_too(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "chatter.db"
    with umask(0o022):
        out = subprocess.run([INTERAPP, "admin", "add-user", "--app", "chatter", "--db", str(db),
                              "bob"], env={**os.environ, "INTERAPP_HOME": str(tmp_path / "h")},
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert mode(db) == 0o600


def test_an_existing_readable_database_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with umask(0o022):  # as an older version left it: 0644, with a WAL beside it
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        assert all(mode(p) == 0o644 for p in side_files(db))
        out = subprocess.run([INTERAPP, "admin", "add-user", "--app", "old", "--db",
                              f"sqlite:///{db}", "carol"],
                             env={**os.environ, "INTERAPP_HOME": str(tmp_path / "h")},
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        conn.close()
    assert out.returncode == 0, out.stderr
    for path in side_files(db):
        if path.exists():
            assert mode(path) == 0o600, (path, oct(mode(path)))
    assert mode(db) == 0o600
    assert "readable by other users" in out.stderr  # the operator is told
