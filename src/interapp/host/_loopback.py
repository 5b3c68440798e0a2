"""The one-shot loopback listener that receives a browser sign-in's answer (RFC 8252 §7.3).

Theory of operation: :class:`Loopback` listens on ``127.0.0.1`` on a port the system picks
(any port: the target registered ``http://127.0.0.1/callback`` and matches any port, RFC 8252
§7.3) and answers HTTP ``GET`` requests by hand (no web framework: one request line, the
headers, no body). The first ``GET`` of :attr:`path` hands its URL to the
:class:`~interapp.host.prompts.LinkCompletion` and answers a small page ("you can close this
window"); anything else (``/favicon.ico`` …) gets 404 and is otherwise ignored. Then the
listener closes: a second answer can never come in. It listens only on the loopback address,
so nothing outside this machine can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from urllib.parse import urlsplit

#: The path of the redirect URI: a target registers ``http://127.0.0.1/callback`` for the host
#: and any port matches it (RFC 8252 §7.3).
CALLBACK_PATH = "/callback"
MAX_REQUEST = 16384
READ_TIMEOUT = 10.0
PAGE = (b"<!doctype html><meta charset=utf-8><title>interapp</title>"
        b"<meta name=viewport content='width=device-width'>"
        b"<body style='font-family:sans-serif;margin:3em'><h1 id=done>%s</h1>"
        b"<p>You can close this window and go back to your application.</body>")


class Loopback:
    """A one-shot HTTP listener on 127.0.0.1 (see the module docstring)."""

    def __init__(self, on_answer: Callable[[str], None], path: str = CALLBACK_PATH) -> None:
        self.path = path
        self._on_answer = on_answer
        self._server: asyncio.Server | None = None
        self._done = False
        self.port = 0

    @property
    def redirect_uri(self) -> str:
        """Where the sign-in page sends the browser back."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def __aenter__(self) -> Loopback:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            if len(head) > MAX_REQUEST:
                raise ValueError("request too large")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            ours = method == "GET" and urlsplit(target).path == self.path and not self._done
            if ours:
                self._done = True
                self._on_answer(f"http://127.0.0.1:{self.port}{target}")
                failed = "error=" in urlsplit(target).query
                status = b"200 OK"
                body = PAGE % (b"Not signed in" if failed else b"Signed in")
            else:
                status, body = b"404 Not Found", b"not found"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/html; charset=utf-8"
                         b"\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer"
                         b"\r\nConnection: close\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
        except (ValueError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if self._done and self._server is not None:
            self._server.close()  # one-shot: no second answer can come in
