"""Run an application server inside the current asyncio loop (demo, tests, benchmarks)."""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType
from typing import Any

import uvicorn

from interapp.server.app import create_app
from interapp.server.settings import ServerSettings


def free_socket(host: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket on a free port of ``host``."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on such sockets' connections
    # (without it every small response waits ~40 ms for the peer's delayed ACK)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(512)
    return sock


class EmbeddedServer:
    """``async with EmbeddedServer(app, db_url) as srv:`` serves on ``srv.url`` until exit."""

    def __init__(self, app: str, db_url: str, *, redis_url: str | None = None,
                 sock: socket.socket | None = None, **settings: Any) -> None:
        """``settings``: further :class:`ServerSettings` fields (e.g. login limits)."""
        self.sock = sock or free_socket()
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = ServerSettings(app=app, db_url=db_url, issuer=self.url,
                                       redis_url=redis_url, **settings)
        self.asgi = create_app(self.settings)
        config = uvicorn.Config(self.asgi, log_level="error", access_log=False, lifespan="on",
                                ws_per_message_deflate=False)
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EmbeddedServer:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(f"server {self.settings.app} did not start")
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task
        self.sock.close()
