"""Who may call the agent: a bearer token on every request, and on loopback TCP the right
``Host`` and ``Origin``.

:class:`Guard` is a plain ASGI middleware so that it covers HTTP and the WebSocket alike:

* every request carries ``Authorization: Bearer TOKEN`` (a WebSocket may instead offer the
  subprotocols ``interapp.agent.v1`` and ``bearer.TOKEN``, since the standard WebSocket API
  cannot set headers); without a valid token the answer is 401 and nothing else runs;
* on TCP (``--port``: 127.0.0.1 only) the ``Host`` header must name this very listener
  (``127.0.0.1:PORT``, ``localhost:PORT`` or ``[::1]:PORT``), so a page of another site that
  resolved its own name to 127.0.0.1 (DNS rebinding) is refused; and an ``Origin`` header, which
  every browser sends with a cross-site request and a WebSocket handshake, must be one that was
  allowed (``--allow-origin``), so no other site's page can call the agent or listen to it.
  Programs that are not browsers send no ``Origin``;
* request bodies are bounded (1 MiB).

On the Unix socket (mode 0600 in a 0700 folder) only the user's own processes get as far as
the token check; ``Host`` means nothing there and is not checked.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from starlette.datastructures import Headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 1 << 20
SUBPROTOCOL = "interapp.agent.v1"
BEARER_PROTOCOL = "bearer."
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def offered_token(headers: Headers) -> str | None:
    """The bearer token of a request: the header, or a WebSocket's ``bearer.`` subprotocol."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for proto in headers.get("sec-websocket-protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(BEARER_PROTOCOL) and len(proto) > len(BEARER_PROTOCOL):
            return proto[len(BEARER_PROTOCOL):]
    return None


class Guard:
    """ASGI middleware: token, then (on TCP) Host and Origin, then a bounded body."""

    def __init__(self, app: ASGIApp, check: Callable[[str], Awaitable[str | None]], *,
                 allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.check = check
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        server = scope.get("server")
        if server is not None and server[1] is not None:  # TCP; None on a Unix socket
            problem = self._tcp_problem(headers, int(server[1]))
            if problem is not None:
                await deny(scope, send, 403, "forbidden", problem)
                return
        token = offered_token(headers)
        who = await self.check(token) if token else None
        if who is None:
            await deny(scope, send, 401, "unauthorized",
                       "a valid agent token is required (Authorization: Bearer TOKEN)")
            return
        scope.setdefault("state", {})["agent_client"] = who
        if scope["type"] == "http":
            await self._bounded(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _tcp_problem(self, headers: Headers, port: int) -> str | None:
        host = headers.get("host", "").lower()
        if host not in {f"{name}:{port}" for name in LOOPBACK_NAMES}:
            return "this agent answers only to its own address (127.0.0.1:PORT)"
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() not in self.allowed_origins:
            return f"requests from {origin[:100]} are not allowed (see --allow-origin)"
        return None

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
            await deny(scope, send, 413, "payload_too_large", "the request body is too large")
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await deny(scope, send, 413, "payload_too_large", "the request body is too large")


class BodyTooLarge(Exception):
    """A chunked body went past the limit."""


async def deny(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    """Answer ``{"error": code, "message": message}`` (a WebSocket: refuse the handshake)."""
    body = json.dumps({"error": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="interapp-agent"'))
    if scope["type"] == "websocket":
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 4000 + status})
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
