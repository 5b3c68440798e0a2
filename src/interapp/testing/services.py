"""Private PostgreSQL and Redis servers for fault tests: start, stop, kill and restart them.

Theory of operation: the shared CI services must never be stopped, so a test that takes a
database or Redis away gets its own. :class:`PrivatePostgres` makes a cluster with ``initdb``
(trust authentication, TCP on 127.0.0.1 only, no Unix socket) and drives it with ``pg_ctl``;
:class:`PrivateRedis` runs ``redis-server`` in the foreground with no persistence. Both keep
their port across restarts, so a server under test reconnects to the same URL.

PostgreSQL refuses to run as root; as root the cluster lives in a fresh folder of the system
temporary folder owned by the ``postgres`` user (``runuser -u postgres``), since pytest's own
folders are private to root. ``fsync`` is off (speed): that loses data only when the *machine*
crashes, not when PostgreSQL is killed, so "nothing acknowledged is lost" still holds for a
``pg_ctl stop -m immediate``. Every process is stopped by :meth:`close` (or the ``with`` block).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

import redis

StopMode = Literal["smart", "fast", "immediate"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str:
    """The newest installed PostgreSQL's ``name`` binary (Debian layout first, then PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    path = found[-1] if found else shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} was not found (install postgresql)")
    return path


class PrivatePostgres:
    """A PostgreSQL cluster of its own on a free 127.0.0.1 port (the URL's database: postgres)."""

    def __init__(self, folder: Path) -> None:
        self._as_postgres = os.geteuid() == 0
        if not self._as_postgres:
            folder.mkdir(parents=True, exist_ok=True)
        # as root: a folder the postgres user can reach (pytest's folders are root-only)
        self.folder = Path(tempfile.mkdtemp(prefix="interapp-pg-",
                                            dir=None if self._as_postgres else folder))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.port = _free_port()
        try:
            if self._as_postgres:
                shutil.chown(self.folder, "postgres", "postgres")
            self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres",
                      "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the ``postgres`` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> int:
        """Run a PostgreSQL tool (as the ``postgres`` user when we are root)."""
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        done = subprocess.run([*prefix, *args], capture_output=True, text=True,  # noqa: S603
                              timeout=60, stdin=subprocess.DEVNULL, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.strip()[-2000:]}")
        return done.returncode

    def start(self) -> PrivatePostgres:
        """Start the server and wait until it accepts connections."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   "-c unix_socket_directories='' -c fsync=off -c full_page_writes=off")
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")
        return self

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server: ``fast`` ends sessions cleanly, ``immediate`` is a crash."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        """True while the postmaster runs."""
        return self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "status", check=False) == 0

    def close(self) -> None:
        """Stop the server (if it runs) and delete its folder."""
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            return self.start()
        except BaseException:
            self.close()  # a half-started postmaster and its folder outside tmp_path
            raise

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PrivateRedis:
    """A ``redis-server`` of its own on a free 127.0.0.1 port, without persistence."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Redis URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> PrivateRedis:
        """Start the server and wait until it answers PING."""
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        with (self.folder / "redis.log").open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv
                [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1,
                             socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self._proc.poll() is not None or time.monotonic() > deadline:
                        self._end(signal.SIGKILL)  # never leave it behind (own session)
                        raise RuntimeError(f"redis-server on port {self.port} did not start; "
                                           f"see {self.folder / 'redis.log'}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server (a crash: every connection drops at once)."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the server and wait for it."""
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def close(self) -> None:
        """Stop the server if it runs."""
        self.stop()

    def __enter__(self) -> PrivateRedis:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
