"""Who may use the web UI: the launch secret, the session cookie, CSRF and the security headers.

Theory of operation: ``interapp ui`` makes a random *launch secret* and prints
``http://127.0.0.1:PORT/?k=SECRET``. The first request carrying it gets a session: a random id in
a cookie (``HttpOnly``, ``SameSite=Strict``, ``Path=/``) and a redirect to ``/`` so the secret
leaves the address bar. The secret is *one-time*: that exchange uses it up, and an unused one
expires after :data:`LINK_TTL`. Only one is valid at a time; :meth:`Sessions.new_link` (the
terminal's Enter key, or SIGUSR1, see :mod:`interapp.web.server`) replaces it. A browser that
already holds a session and opens a used address is simply sent to ``/``. Sessions are kept
least-recently-used first, so a new one never pushes out a session in use.

Every other request — pages, API, static files, the WebSocket — needs
that session; nothing else is served. Every state-changing request (anything but GET/HEAD) must
carry the session's CSRF token, in the ``X-CSRF-Token`` header (``fetch``) or in a ``csrf`` form
field (plain HTML forms), and an ``Origin`` (when the browser sends one) of this very server.
The ``Host`` header must name this server too (no DNS rebinding). Sessions live in memory: they
end with the process.

:class:`SessionGate` is a plain ASGI middleware so that it covers HTTP and WebSocket alike.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import Headers, MutableHeaders, QueryParams

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 256 * 1024
MAX_SESSIONS = 64
LINK_TTL = 15 * 60.0
"""Seconds an unused one-time address stays valid."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
CLOSE_NO_SESSION = 4401

DENIED_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>interapp: not signed in</title></head><body>
<h1>This page needs the address that <code>interapp ui</code> printed</h1>
<p>Each address that <code>interapp ui</code> prints opens the UI once (within 15 minutes).
For a new one, press Enter in the terminal where <code>interapp ui</code> runs (or send that
process <code>SIGUSR1</code>), then open the address it prints.</p>
</body></html>"""


@dataclass
class Session:
    """One browser's session with the UI server."""

    id: str
    csrf: str
    created: float = field(default_factory=time.time)


class Sessions:
    """The launch secret and the live sessions (in memory, for the life of the process)."""

    def __init__(self, launch_secret: str | None = None, *, port: int = 0,
                 link_ttl: float = LINK_TTL) -> None:
        self.port = port
        self.link_ttl = link_ttl
        self._live: OrderedDict[str, Session] = OrderedDict()
        self._link: tuple[str, float] | None = None
        self.new_link(launch_secret)

    @property
    def launch_secret(self) -> str:
        """The current one-time secret (empty once used)."""
        return self._link[0] if self._link else ""

    def new_link(self, secret: str | None = None) -> str:
        """A fresh one-time secret; the previous one stops working."""
        value = secret or secrets.token_urlsafe(32)
        self._link = (value, time.monotonic() + self.link_ttl)
        return value

    @property
    def cookie_name(self) -> str:
        """Cookies are not isolated by port: one name per port keeps two UIs apart."""
        return f"interapp_ui_{self.port}" if self.port else "interapp_ui"

    def exchange(self, offered: str) -> Session | None:
        """A new session when ``offered`` is the live one-time secret (used up); else None."""
        link = self._link
        if link is None or time.monotonic() > link[1] or not hmac.compare_digest(
                offered.encode(), link[0].encode()):
            return None
        self._link = None
        session = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
        self._live[session.id] = session
        while len(self._live) > MAX_SESSIONS:  # the least recently used goes, never a live one
            self._live.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, if any."""
        if not session_id:
            return None
        session = self._live.get(session_id)
        if session is not None:
            self._live.move_to_end(session_id)
        return session

    def cookie(self, session: Session) -> str:
        """The ``Set-Cookie`` value for ``session``."""
        return f"{self.cookie_name}={session.id}; HttpOnly; SameSite=Strict; Path=/"


def csrf_ok(session: Session, offered: str | None) -> bool:
    """Constant-time check of a CSRF token."""
    return offered is not None and hmac.compare_digest(offered.encode(), session.csrf.encode())


def security_headers(host: str) -> dict[str, str]:
    """Headers added to every HTTP response (scripts and styles only from this server)."""
    csp = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
           f"connect-src 'self' ws://{host}; form-action 'self'; base-uri 'none'; "
           "frame-ancestors 'none'")
    return {"content-security-policy": csp, "x-frame-options": "DENY",
            "x-content-type-options": "nosniff", "referrer-policy": "same-origin",
            "cache-control": "no-store", "cross-origin-opener-policy": "same-origin"}


class SessionGate:
    """ASGI middleware: host check, launch-secret exchange, session, CSRF, headers."""

    def __init__(self, app: ASGIApp, sessions: Sessions, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.sessions = sessions
        self.allowed_hosts = {h.lower() for h in allowed_hosts}

    def _host_ok(self, headers: Headers) -> str | None:
        host = headers.get("host", "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return host if name in self.allowed_hosts else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = self._host_ok(headers)
        if host is None:
            await self._deny(scope, send, 400, "this server answers only to its own address")
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, headers, host)
            return
        await self._http(scope, receive, send, headers, host)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, headers: Headers,
                         host: str) -> None:
        session = self.sessions.get(self._cookie(headers))
        origin = headers.get("origin")
        if session is None or origin != f"http://{host}":
            await send({"type": "websocket.close", "code": CLOSE_NO_SESSION})
            return
        scope.setdefault("state", {})["session"] = session
        await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send, headers: Headers,
                    host: str) -> None:
        extra = security_headers(host)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for key, value in extra.items():
                    if key not in out:
                        out[key] = value
            await send(message)

        query = QueryParams(scope.get("query_string", b"").decode("latin-1"))
        session = self.sessions.get(self._cookie(headers))
        if scope["path"] == "/" and "k" in query:
            if session is not None:  # already signed in (a used address opened again)
                await _respond(send_with_headers, 303, b"", "text/plain", [(b"location", b"/")])
                return
            await self._exchange(query["k"], send_with_headers)
            return
        if session is None:
            await self._deny(scope, send_with_headers, 401, "no session")
            return
        scope.setdefault("state", {})["session"] = session
        if scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send_with_headers)
            return
        body = await self._read_body(receive)
        if body is None:
            await self._deny(scope, send_with_headers, 413, "request too large")
            return
        origin = headers.get("origin")
        token = headers.get(CSRF_HEADER)
        if token is None and headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"):
            values = parse_qs(body.decode("utf-8", "replace")).get(CSRF_FIELD)
            token = values[0] if values else None
        if (origin is not None and origin != f"http://{host}") or not csrf_ok(session, token):
            await self._deny(scope, send_with_headers, 403,
                             "missing or wrong CSRF token (reload the page)")
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_headers)

    def _cookie(self, headers: Headers) -> str | None:
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.sessions.cookie_name:
                return value
        return None

    @staticmethod
    async def _read_body(receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _exchange(self, offered: str, send: Send) -> None:
        session = self.sessions.exchange(offered)
        if session is None:
            await _respond(send, 403, DENIED_PAGE.encode(), "text/html; charset=utf-8")
            return
        cookie = self.sessions.cookie(session).encode()
        await _respond(send, 303, b"", "text/plain",
                       [(b"location", b"/"), (b"set-cookie", cookie)])

    @staticmethod
    async def _deny(scope: Scope, send: Send, status: int, reason: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": CLOSE_NO_SESSION})
            return
        wants_html = scope["path"] == "/" or "text/html" in Headers(scope=scope).get("accept", "")
        if status == 401 and wants_html:
            await _respond(send, 401, DENIED_PAGE.encode(), "text/html; charset=utf-8")
            return
        await _respond(send, status, json.dumps({"error": reason}).encode(), "application/json")


async def _respond(send: Send, status: int, body: bytes, content_type: str,
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type.encode()),
               (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
