"""HTTP/1.1 connection limits of ``interapp serve``: header timeout, header size, concurrency.

Theory of operation: uvicorn bounds an idle keep-alive connection *after* a response
(``timeout_keep_alive``), but nothing bounds a connection that has not finished its request
headers yet: a client that connects and sends nothing, or sends a header byte now and then
(each byte also cancels the keep-alive timer), holds its socket for ever, and httptools puts
no bound on the size of the headers either. :class:`GuardedHttpToolsProtocol` is uvicorn's
httptools protocol with three additions, configured through :class:`GuardedConfig`:

* **Header timeout.** A timer runs from the moment the connection is made, and again from the
  end of each response, until the next request's headers are complete; when it fires the
  connection is closed (with a ``408`` JSON answer when part of a request had arrived).
  Bytes arriving do not reset it, so a trickle cannot keep a connection.
* **Header size.** Request line plus headers over ``max_header_bytes`` get ``431``.
* **Concurrency.** uvicorn's ``limit_concurrency`` check (open connections, event streams
  included, or running requests), answered with the server's JSON error body
  (``503 unavailable`` + ``Retry-After``) instead of uvicorn's plain text, and applied to
  WebSocket upgrades too (uvicorn lets those through).

uvicorn's own malformed-request answer (400) is given the JSON body too. The class is hand
written because uvicorn has no header timeout (only h11's size limit, and this server runs the
faster httptools parser); it overrides only the parser callbacks and timers of the protocol.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn
from starlette.responses import JSONResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from interapp.server.observability import ERRORS

__all__ = ["HEADER_TIMEOUT", "LIMIT_CONCURRENCY", "MAX_HEADER_BYTES", "GuardedConfig",
           "GuardedHttpToolsProtocol"]

HEADER_TIMEOUT = 10.0
"""Seconds a connection may take to send complete request headers (from connect or the end of
the previous response)."""
MAX_HEADER_BYTES = 16 * 1024
"""Request line plus header fields (h11's default limit)."""
LIMIT_CONCURRENCY = 20_000
"""Open connections (event streams included) or running requests past which new HTTP requests
are answered 503: twice the 10,000 idle streams one process is sized for."""


class GuardedConfig(uvicorn.Config):
    """``uvicorn.Config`` running :class:`GuardedHttpToolsProtocol` with these limits."""

    def __init__(self, app: Any, *, header_timeout: float = HEADER_TIMEOUT,
                 max_header_bytes: int = MAX_HEADER_BYTES, **kwargs: Any) -> None:
        kwargs.setdefault("limit_concurrency", LIMIT_CONCURRENCY)
        super().__init__(app, http=GuardedHttpToolsProtocol, **kwargs)
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes


_BUSY = "server busy: too many connections; retry shortly"


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing (httptools wraps it)."""


def _raw_response(status: int, phrase: str, code: str, message: str,
                  extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    body = json.dumps({"error": code, "message": message}).encode()
    head = [f"HTTP/1.1 {status} {phrase}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close",
            *(f"{name}: {value}" for name, value in extra)]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout, a header size limit and JSON errors
    (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._header_timeout = float(getattr(config, "header_timeout", HEADER_TIMEOUT))
        self._max_header_bytes = int(getattr(config, "max_header_bytes", MAX_HEADER_BYTES))
        self._limit = self.limit_concurrency
        self.limit_concurrency = None  # checked below, answered in JSON
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._request_started = False
        self._too_large = False

    # --- the header timer ---------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self._header_timeout, self._header_timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._request_started:
            ERRORS.labels("request_timeout").inc()
            self.transport.write(_raw_response(
                408, "Request Timeout", "request_timeout",
                f"the request headers did not arrive within {self._header_timeout:g} s"))
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header timer as the connection opens."""
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the header timer."""
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        """After a response: the next request's headers are due within the timeout again
        (unless a pipelined request, whose headers are already in, starts now)."""
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # uvicorn waits for a next request
            self._request_started = False
            self._arm()

    # --- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A request starts: count its header bytes from here."""
        super().on_message_begin()
        self._request_started = True
        self._header_bytes = 0
        if self._header_timer is None:  # pipelined behind a request still running
            self._arm()

    def on_url(self, url: bytes) -> None:
        """Count the request target against the header size limit."""
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count each header field against the header size limit."""
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self._max_header_bytes:
            self._too_large = True
            raise _HeadersTooLarge

    def _over_limit(self) -> bool:
        if self._limit is None or (len(self.connections) < self._limit
                                   and len(self.tasks) < self._limit):
            return False
        self.logger.warning("Exceeded concurrency limit.")
        ERRORS.labels("unavailable").inc()
        return True

    def on_headers_complete(self) -> None:
        """Headers are in: stop the timer; over the concurrency limit, answer 503."""
        self._disarm()
        if (self.parser.should_upgrade() and self._should_upgrade()) or not self._over_limit():
            super().on_headers_complete()  # (an upgrade is checked in handle_websocket_upgrade)
            return
        app, self.app = self.app, JSONResponse(
            {"error": "unavailable", "message": _BUSY}, status_code=503,
            headers={"Retry-After": "1", "Connection": "close"})
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def handle_websocket_upgrade(self) -> None:
        """Over the concurrency limit an event stream is refused with the same 503."""
        if self._over_limit():
            self.transport.write(_raw_response(503, "Service Unavailable", "unavailable", _BUSY,
                                               (("retry-after", "1"),)))
            self.transport.close()
            return
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse, as JSON (431 when too large)."""
        if self._too_large:
            ERRORS.labels("headers_too_large").inc()
            data = _raw_response(431, "Request Header Fields Too Large", "headers_too_large",
                                 f"the request line and headers are over "
                                 f"{self._max_header_bytes} bytes")
        else:
            ERRORS.labels("bad_request").inc()
            data = _raw_response(400, "Bad Request", "bad_request", msg)
        self.transport.write(data)
        self.transport.close()
