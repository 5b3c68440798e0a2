"""Real servers for tests: an interapp application server in a background thread.

Session-scoped fixtures outlive any one test's event loop, so the server gets a loop of its own
in a thread; tests talk to it over a real socket on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from interapp.secret import Secret
from interapp.server import accounts
from interapp.server.embedded import EmbeddedServer
from interapp.server.storage import Database

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Block until something accepts connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


class ThreadedServer:
    """An interapp application server on its own thread and loop; restartable on one port."""

    def __init__(self, app: str, db_path: Path, *, port: int | None = None) -> None:
        self.app = app
        self.db_url = f"sqlite:///{db_path}"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> ThreadedServer:
        """Start serving; returns once the port answers."""
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name=f"server-{self.app}",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(512)
            async with EmbeddedServer(self.app, self.db_url, sock=sock):
                self._ready.set()
                await self._stop.wait()

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    def stop(self) -> None:
        """Stop serving (the data stays)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
        self._thread = None

    def call(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30.0) -> T:
        """Run a coroutine on the server's loop (e.g. to seed its database) and wait for it."""
        assert self._loop is not None, "the server is not running"
        return asyncio.run_coroutine_threadsafe(make(), self._loop).result(timeout)

    def create_client(self, name: str = "host", *, public: bool = False,
                      redirect_uris: tuple[str, ...] = (),
                      grant_types: tuple[str, ...] | None = None
                      ) -> tuple[str, Secret | None]:
        """Register an OAuth client in the server's database: its id and (confidential) secret
        (``redirect_uris`` and ``grant_types`` as ``interapp admin add-client`` takes them)."""

        async def work() -> tuple[str, Secret | None]:
            db = Database.open(self.db_url)
            try:
                async with db.begin() as conn:
                    return await accounts.create_client(conn, name, public=public,
                                                        redirect_uris=redirect_uris,
                                                        grant_types=grant_types)
            finally:
                await db.close()

        return self.call(work)

    def restart(self) -> None:
        """Stop, then serve again on the same port and data."""
        self.stop()
        self.start()
