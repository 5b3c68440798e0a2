"""``GET /v1/events``: the account's event stream over a WebSocket.

Theory of operation: authenticate (``Authorization: Bearer`` or a single-use ``?ticket=``; an
access token in the URL is refused), subscribe to the hub, replay stored events after ``since``
(or start from the current ``seq`` when no ``since`` is given; a ``since`` past the newest
``seq`` is refused with ``cursor_unknown`` and the ``last_seq`` to resume from, since live events
up to it would be dropped as already seen), then forward live events. The
stream keeps ``last`` — the highest ``seq`` sent — and only ever sends ``last + 1``: duplicates
are dropped and gaps are filled from the table, so the client sees each ``seq`` exactly once,
in order.

Slow readers are cut, never buffered: a client that falls behind its bounded queue, or that stops
reading so that one frame cannot be handed to the transport within ``SEND_TIMEOUT`` seconds
(``$INTERAPP_STREAM_SEND_TIMEOUT``, default 10), is disconnected with close code 4008 and the
reason ``too slow: resume with since=<last seq sent>``; it resumes with ``?since=``. Closing waits
at most ``SEND_TIMEOUT`` too: a peer that reads nothing never gets the close frame, but its stream
task ends, its queue is freed and uvicorn closes the connection behind the frames already
written (a client that reads again gets them first, then the close or the end of the stream).

Sending on the stream: a stream opened with a bearer token also takes
``{"type": "send", "to", "body", "client_msg_id"}`` frames — the same message as
``POST /v1/messages``, without an HTTP request per message. Each is checked like that request
(the token is looked up again, so a revoked token stops sending at once), committed, published,
and answered with ``{"type": "sent", "client_msg_id", "message"}`` or
``{"type": "send_failed", "client_msg_id", "status", "error", "message"}``. These answers carry
no ``seq``; the ``message`` event itself comes in order like any other. Sends are handled one at
a time per stream, in the order they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from interapp.errors import (
    ApiError,
    BadRequest,
    ConfigError,
    CursorUnknown,
    InterappError,
    Unauthorized,
)
from interapp.server.api.deps import Caller, authenticate_token, bearer_token, token_check
from interapp.server.api.errors import to_http
from interapp.server.api.models import MessageIn
from interapp.server.core import AppServer
from interapp.server.events import Subscription, events_since
from interapp.server.observability import ACTIVE_STREAMS, ERRORS
from interapp.server.storage.schema import tickets, users
from interapp.server.tokens import token_hash

log = logging.getLogger("interapp.server.stream")
CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_REQUEST = 4400
CLOSE_TOO_SLOW = 4008
CLOSE_TRY_AGAIN, CLOSE_INTERNAL_ERROR = 1013, 1011
_LAST_SEQ = sa.select(users.c.last_seq).where(users.c.id == sa.bindparam("user"))
RECONCILE_SECONDS = 20.0
SEND_TIMEOUT_ENV = "INTERAPP_STREAM_SEND_TIMEOUT"


def _send_timeout_from_env() -> float:
    raw = os.environ.get(SEND_TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else 10.0
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise ConfigError(f"{SEND_TIMEOUT_ENV} must be a number of seconds in (0, 3600], "
                          f"not {raw!r}")
    return value


SEND_TIMEOUT = _send_timeout_from_env()
"""Seconds one frame (or the close frame) may wait for a stalled transport to take it."""


class TooSlow(Exception):
    """The client fell behind (queue overflow or send timeout); ``last`` is the last seq sent."""

    def __init__(self, last: int, why: str) -> None:
        super().__init__(why)
        self.last = last


async def _authenticate(srv: AppServer, ws: WebSocket) -> tuple[str, str | None]:
    """The stream's account id, and its bearer token (None for a ticket)."""
    params = ws.query_params
    if "access_token" in params:
        raise Unauthorized("never put an access token in a URL: use the Authorization header "
                           "or a ticket from POST /v1/events/ticket")
    ticket = params.get("ticket")
    if ticket:
        async with srv.db.begin() as conn:
            row = (await conn.execute(tickets.delete().where(
                tickets.c.hash == token_hash(ticket)).returning(
                tickets.c.user_id, tickets.c.expires_at))).first()
        if row is None or row.expires_at < time.time():
            raise Unauthorized("the ticket is invalid, used or expired")
        return str(row.user_id), None
    token = bearer_token(ws.headers.get("authorization"))
    who: Caller = await authenticate_token(srv, token)
    return who.user.id, token


def _since(ws: WebSocket) -> int | None:
    raw = ws.query_params.get("since")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest("since must be a non-negative integer")
    return int(raw)


class _Stream:
    def __init__(self, srv: AppServer, ws: WebSocket, user_id: str, last: int) -> None:
        self.srv, self.ws, self.user_id, self.last = srv, ws, user_id, last

    async def catch_up(self) -> None:
        """Send every stored event after ``last``."""
        while True:
            async with self.srv.db.begin() as conn:
                batch = await events_since(conn, self.user_id, self.last)
            for event in batch:
                await self.send(event)
            if len(batch) < 500:
                return

    async def send(self, event: dict[str, Any]) -> None:
        """Send ``event`` if it is the next ``seq`` (filling a gap first); raise TooSlow when
        the transport does not take it within ``SEND_TIMEOUT``."""
        if event["seq"] <= self.last:
            return
        if event["seq"] > self.last + 1:
            await self.catch_up()
            if event["seq"] <= self.last:
                return
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await self.ws.send_json(event)
        except TimeoutError:
            raise TooSlow(self.last, f"no frame written for {SEND_TIMEOUT:g} s") from None
        self.last = event["seq"]

    async def pump(self, sub: Subscription) -> None:
        """Forward live events until the client leaves; raise TooSlow when it falls behind.

        Waits on the subscription (no task per wait: an idle stream costs its coroutine frames
        and one future); every ``RECONCILE_SECONDS`` of silence, and whenever the hub wakes it,
        it reconciles with the table.
        """
        while True:
            idle = False
            try:
                async with asyncio.timeout(RECONCILE_SECONDS):
                    await sub.wait()
            except TimeoutError:
                idle = True
            if sub.overflowed:
                raise TooSlow(self.last, f"more than {sub.limit} events queued")
            for event in sub.take():
                await self.send(event)
            if idle or sub.stale:
                sub.stale = False
                await self.catch_up()


class EventStreamRoute:
    """ASGI middleware: ``/v1/events`` goes straight to :func:`events_stream`.

    Installed as the outermost middleware, so a stream skips the HTTP middleware (body limit,
    request metrics), FastAPI's routing, dependency solving and exit stacks: every layer stays
    suspended for the life of the stream and cost an idle stream ~10 KB (measured with
    tracemalloc at 1,000 streams). The handler does its own error handling.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route a ``/v1/events`` WebSocket to its handler, anything else on."""
        if scope["type"] == "websocket" and scope["path"] == "/v1/events":
            await events_stream(WebSocket(scope, receive, send))
        else:
            await self.app(scope, receive, send)


async def events_stream(ws: WebSocket) -> None:
    """The WebSocket event stream (see the module docstring)."""
    srv: AppServer = ws.app.state.server
    await ws.accept()
    try:
        user_id, token = await _authenticate(srv, ws)
        since = _since(ws)
    except InterappError as exc:
        await _fail(ws, exc)
        return
    sub = srv.hub.subscribe(user_id)
    ACTIVE_STREAMS.inc()
    reader: asyncio.Task[Any] | None = None
    try:
        newest = await _current_seq(srv, user_id)
        if since is None:
            since = newest
        elif since > newest:  # e.g. a cursor kept across a reset of this server's database
            raise CursorUnknown(f"since={since} is past this account's newest event ({newest});"
                                f" events may be missing: resume with since={newest}",
                                last_seq=newest)
        stream = _Stream(srv, ws, user_id, since)
        await stream.catch_up()
        reader = asyncio.create_task(_read(stream, token))
        pump = asyncio.create_task(stream.pump(sub))
        pump.add_done_callback(lambda _: reader.cancel())  # the pump only ends by failing
        try:
            await reader  # until the client leaves (or the reader fails)
        except asyncio.CancelledError:
            failure = pump.exception() if pump.done() and not pump.cancelled() else None
            if failure is None:
                raise  # this handler itself is being cancelled
            raise failure from None  # handled below like any error of this handler
        finally:
            pump.cancel()
            if pump.done() and not pump.cancelled():
                pump.exception()  # retrieved, even when the reader ended first
    except (WebSocketDisconnect, OSError):
        pass
    except TooSlow as exc:
        srv.hub.unsubscribe(sub)  # queue nothing more for it while the close frame waits
        log.info("stream closed at seq %d, client too slow: %s", exc.last, exc)
        await _close(ws, CLOSE_TOO_SLOW, f"too slow: resume with since={exc.last}")
    except InterappError as exc:  # e.g. the database went away: try again later
        await _fail(ws, exc)
    finally:
        srv.hub.unsubscribe(sub)
        ACTIVE_STREAMS.dec()
        if reader is not None:
            reader.cancel()
        if ws.client_state == WebSocketState.CONNECTED:
            await _close(ws, 1000, "")


async def _current_seq(srv: AppServer, user_id: str) -> int:
    """The account's newest ``seq`` (its own function, so the handler keeps no connection)."""
    async with srv.db.begin() as conn:
        return int((await conn.execute(_LAST_SEQ, {"user": user_id})).scalar_one())


async def _fail(ws: WebSocket, exc: InterappError) -> None:
    """End a stream with an error frame ``{"type": "error", "error", "message"}`` and a close
    code: 4401 unauthorized, 4400 bad request, 1013 "try again later" for an outage (503),
    1011 for anything else."""
    exc = to_http(exc)
    ERRORS.labels(exc.code).inc()
    if isinstance(exc, ApiError) and exc.status in (400, 401):
        code = CLOSE_UNAUTHORIZED if exc.status == 401 else CLOSE_BAD_REQUEST
    else:
        code = CLOSE_TRY_AGAIN if exc.status == 503 else CLOSE_INTERNAL_ERROR
    body = exc.to_wire() if isinstance(exc, ApiError) else {"error": exc.code,
                                                            "message": exc.message}
    with contextlib.suppress(Exception):  # the client may be gone, or stalled
        async with asyncio.timeout(SEND_TIMEOUT):
            await ws.send_json({"type": "error", **body})
    await _close(ws, code, exc.message[:120] if code >= 4000 else exc.code[:120])


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    """Send a close frame, waiting at most ``SEND_TIMEOUT`` for a stalled transport.

    Starlette marks the socket closed before the frame is handed over, so a later close is a
    no-op even when this one timed out.
    """
    with contextlib.suppress(Exception):  # TimeoutError, or the socket is already gone
        async with asyncio.timeout(SEND_TIMEOUT):
            await ws.close(code, reason)


async def _read(stream: _Stream, token: str | None) -> None:
    """Read client frames until the client disconnects; carry out ``send`` frames."""
    ws, srv = stream.ws, stream.srv
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            continue  # binary frames mean nothing here
        try:
            frame = json.loads(text)
        except ValueError:
            continue
        if isinstance(frame, dict) and frame.get("type") == "send":
            # a send under way still commits and publishes if the stream is cut meanwhile (the
            # batch runs in its own task); its client retries over HTTP with the client_msg_id
            reply = await _send_message(srv, token, stream.user_id, frame)
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await ws.send_json(reply)
            except TimeoutError:
                raise TooSlow(stream.last, f"no frame written for {SEND_TIMEOUT:g} s") from None


async def _send_message(srv: AppServer, token: str | None, user_id: str,
                        frame: dict[str, Any]) -> dict[str, Any]:
    """One ``send`` frame: the ``sent`` or ``send_failed`` answer."""
    ref = frame.get("client_msg_id")
    ref = ref if isinstance(ref, str) else None
    try:
        if token is None:
            raise Unauthorized("sending needs a stream opened with a bearer token")
        try:
            body = MessageIn.model_validate({k: frame.get(k) for k in ("to", "body")} | {
                "client_msg_id": ref})
        except ValidationError as exc:
            raise BadRequest(_first_problem(exc)) from exc
        if body.client_msg_id is None:
            raise BadRequest("client_msg_id is required when sending on the stream")
        # the token is looked up again in the batch's transaction: a revoked one stops at once
        out = await srv.sends.submit(token_check(token, user_id), body.to, body.body,
                                     body.client_msg_id)
    except InterappError as exc:  # refused, or e.g. the database is unavailable (503)
        exc = to_http(exc)
        wire = exc.to_wire() if isinstance(exc, ApiError) else {"error": exc.code,
                                                                "message": exc.message}
        return {"type": "send_failed", "client_msg_id": ref, "status": exc.status, **wire}
    except Exception as exc:  # a bug or an unmapped failure: answer it, keep the stream
        log.error("send on the stream failed: %s", type(exc).__name__, exc_info=exc)
        return {"type": "send_failed", "client_msg_id": ref, "status": 500,
                "error": "internal_error", "message": "internal server error"}
    return {"type": "sent", "client_msg_id": ref, "message": out}


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "frame"
    return f"{where}: {err.get('msg', 'invalid')}"
