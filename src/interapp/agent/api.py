"""The agent's local API under ``/agent/v1``: routes, errors, the OpenAPI document, events.

Every route is a thin call into :class:`~interapp.agent.core.Agent`; FastAPI validates the
input against :mod:`interapp.agent.models` and serializes the answer through them, so the
OpenAPI document (``GET /agent/v1/openapi.json``) is what is served. Every error, including
bad input, unknown routes and wrong methods, is ``{"error": code, "message": text}`` with a
4xx status (5xx only when a target or the agent itself fails). The event WebSocket is
documented in the same document as ``GET /agent/v1/events`` (OpenAPI has no WebSocket
operations): it answers a plain GET with 426.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.websockets import WebSocketDisconnect

from interapp.agent import models as m
from interapp.agent import routes_rich
from interapp.agent.core import Agent
from interapp.agent.fastpath import FastPath
from interapp.agent.guard import SUBPROTOCOL, Guard
from interapp.host import (
    ConfigError,
    ConnectionLost,
    InterappError,
    LinkError,
    NoLocalApp,
    NotFoundError,
    NotSignedIn,
    PluginCrashed,
    PluginTimeout,
    VaultTampered,
)

PREFIX = "/agent/v1"
TargetName = Annotated[str, Path(min_length=1, max_length=64)]
UserName = Annotated[str, Path(min_length=1, max_length=256)]
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": m.ErrorBody, "description": text} for status, text in (
        (400, "Bad input"), (401, "No valid agent token"), (403, "Wrong Host or Origin"),
        (404, "No such target, user, prompt or route"),
        (409, "Not possible now (nobody signed in, a link that needs a sign-in …)"),
        (413, "Body too large"), (502, "The target refused or failed"),
        (503, "The target cannot be reached now; try again"))}


def http_status(exc: InterappError) -> int:
    """The HTTP status for an error of the host or a target."""
    if isinstance(exc, NoLocalApp | NotSignedIn | LinkError):
        return 409
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConfigError):
        return 400
    if isinstance(exc, ConnectionLost | PluginTimeout):
        return 503
    if isinstance(exc, PluginCrashed | VaultTampered):
        return 502
    if 400 <= exc.status < 500 and exc.status not in (401, 403, 407):
        return exc.status  # what the target said about the input (404 no such user …)
    return 502 if exc.status < 500 or exc.status == 500 else 503


def error_body(exc: InterappError) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of an error of the host or a target."""
    body: dict[str, Any] = {"error": exc.code, "message": exc.message}
    if exc.target is not None:
        body["target"] = exc.target
    return http_status(exc), body


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _first_problem(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "bad input"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    text = str(first.get("msg", "bad input"))
    return f"{where}: {text}" if where else text


def create_app(agent: Agent, check: Callable[[str], Awaitable[str | None]], *,
               allowed_origins: tuple[str, ...] = ()) -> Guard:
    """The ASGI application of the agent, behind its :class:`~interapp.agent.guard.Guard`."""
    app = FastAPI(title="interapp agent", version="1", openapi_url=f"{PREFIX}/openapi.json",
                  docs_url=None, redoc_url=None,
                  description="The local API of `interapp agent`: one long-lived host for the "
                              "data folder. See docs/agent.md.")

    @app.exception_handler(InterappError)
    async def interapp_error(request: Request, exc: InterappError) -> JSONResponse:
        status, body = error_body(exc)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_input(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "bad_request", _first_problem(exc)[:300])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code,
                                                                "bad_request")
        return _error(exc.status_code if exc.status_code < 500 else 400, code,
                      str(exc.detail)[:300])


    @app.get(f"{PREFIX}/state", response_model=m.StateOut, responses=ERRORS)
    async def state() -> dict[str, Any]:
        """The agent, the local application, who is signed in, every target (link state and
        connection state) and the open prompts."""
        return agent.state()

    @app.put(f"{PREFIX}/local", response_model=m.LocalSet, responses=ERRORS)
    async def set_local(body: m.LocalIn) -> dict[str, Any]:
        """Choose the local application (an interapp server); signs the user out."""
        return await agent.set_local(body.server, body.client_id, body.client_secret)

    @app.post(f"{PREFIX}/session", response_model=m.SessionOut, responses=ERRORS)
    async def sign_in(body: m.SessionIn) -> dict[str, Any]:
        """Sign in to the local application."""
        return await agent.sign_in(body.username, body.password)

    @app.delete(f"{PREFIX}/session", response_model=m.SignedOut, responses=ERRORS)
    async def sign_out() -> dict[str, Any]:
        """Sign out of the local application (every target disconnects)."""
        await agent.sign_out()
        return {"signed_out": True}

    @app.get(f"{PREFIX}/targets", response_model=m.TargetsOut, responses=ERRORS)
    async def targets() -> dict[str, Any]:
        """The configured targets (as in ``state``)."""
        return {"targets": agent.targets()}

    @app.post(f"{PREFIX}/targets", response_model=m.TargetRow, status_code=201, responses=ERRORS)
    async def add_target(body: m.TargetIn) -> dict[str, Any]:
        """Add or replace a target (its client secret goes to the vault)."""
        return await agent.add_target(
            body.name, plugin=body.plugin, server=body.server, client_id=body.client_id,
            client_secret=body.client_secret, account_system=body.account_system,
            tls=body.tls, options=body.options)

    @app.delete(f"{PREFIX}/targets/{{name}}", response_model=m.RemovedOut, responses=ERRORS)
    async def remove_target(name: TargetName) -> dict[str, Any]:
        """Remove a target from the configuration (its link stays until unlinked)."""
        await agent.remove_target(name)
        return {"removed": name}

    connect_out = m.ConnectedOut | m.PromptOut | m.PendingOut

    @app.post(f"{PREFIX}/targets/{{name}}/connect", response_model=connect_out, responses=ERRORS)
    async def connect(name: TargetName, body: m.ConnectIn | None = None) -> dict[str, Any]:
        """Connect a target (claim 1): ``{"connected": …}``, or ``{"prompt": …}`` to answer
        with ``POST /agent/v1/prompts/{id}`` (``{"pending": …}`` if it takes minutes)."""
        body = body or m.ConnectIn()
        return await agent.connect(name, account=body.account, reconnect=body.reconnect)

    @app.post(f"{PREFIX}/prompts/{{prompt_id}}",
              response_model=m.ConnectedOut | m.PromptOut | m.PendingOut | m.DeclinedOut,
              responses=ERRORS)
    async def answer(prompt_id: Annotated[str, Path(min_length=1, max_length=64)],
                     body: m.AnswerIn) -> dict[str, Any]:
        """Answer a prompt (``{"answers": {field: value}}``) or decline it
        (``{"decline": true}``); then what came of it: connected, the next attempt's prompt,
        or the error."""
        if not body.decline and body.answers is None:
            raise ConfigError("give answers, or decline: true")
        return await agent.answer(prompt_id, None if body.decline else body.answers)

    @app.get(f"{PREFIX}/links", response_model=m.LinksOut, responses=ERRORS)
    async def links() -> dict[str, Any]:
        """The signed-in user's stored links."""
        return {"links": await agent.links()}

    @app.get(f"{PREFIX}/audit", response_model=m.AuditOut, responses=ERRORS)
    async def audit() -> dict[str, Any]:
        """Check the vault's hash-chained audit log."""
        return await agent.audit()

    @app.delete(f"{PREFIX}/targets/{{name}}/link", response_model=m.UnlinkOut, responses=ERRORS)
    async def unlink(name: TargetName) -> dict[str, Any]:
        """Revoke the grant at the target, then destroy the local credential; says what
        happened on each side."""
        return await agent.unlink(name)

    @app.get(f"{PREFIX}/buddies", response_model=m.BuddiesOut, responses=ERRORS)
    async def buddies(target: Annotated[str | None, Query(min_length=1, max_length=64)] = None
                      ) -> dict[str, Any]:
        """The buddy list of one target, or across the connected ones (``problems``: the
        targets that could not be asked)."""
        return await agent.buddies(target)

    @app.post(f"{PREFIX}/buddies", response_model=m.BuddyDone, status_code=201, responses=ERRORS)
    async def add_buddy(body: m.BuddyIn) -> dict[str, Any]:
        """Ask ``user`` on ``target`` to become a buddy."""
        return await agent.buddy("add", body.target, body.user)

    @app.post(f"{PREFIX}/buddies/accept", response_model=m.BuddyDone, responses=ERRORS)
    async def accept_buddy(body: m.BuddyIn) -> dict[str, Any]:
        """Accept ``user``'s buddy request on ``target``."""
        return await agent.buddy("accept", body.target, body.user)

    @app.delete(f"{PREFIX}/buddies/{{target}}/{{user}}", response_model=m.BuddyDone,
                responses=ERRORS)
    async def remove_buddy(target: TargetName, user: UserName) -> dict[str, Any]:
        """Remove ``user`` from the buddies on ``target`` (or withdraw a request)."""
        return await agent.buddy("remove", target, user)

    @app.post(f"{PREFIX}/messages", response_model=m.MessageOut, status_code=201, responses=ERRORS)
    async def send(body: m.MessageIn) -> dict[str, Any]:
        """Send a message; the same ``client_msg_id`` is sent once, however often posted."""
        return await agent.send(body.target, body.to, body.body, body.client_msg_id)

    @app.get(f"{PREFIX}/history/{{target}}/{{user}}", response_model=m.HistoryOut,
             response_model_by_alias=True, responses=ERRORS)
    async def history(target: TargetName, user: UserName,
                      limit: Annotated[int, Query(ge=1, le=500)] = 50,
                      before: Annotated[str | None, Query(min_length=1, max_length=128)] = None
                      ) -> dict[str, Any]:
        """The conversation with ``user``, newest last; ``before`` (a message id) pages back."""
        return await agent.history(target, user, limit, before)

    @app.put(f"{PREFIX}/presence", response_model=m.PresenceOut, responses=ERRORS)
    async def presence(body: m.PresenceIn) -> dict[str, Any]:
        """Set presence on every connected target; the agent holds it for the targets that
        connect later and after reconnects."""
        return await agent.set_presence(body.state, body.status_text)

    @app.get(f"{PREFIX}/events", status_code=426, response_model=m.ErrorBody,
             responses={**ERRORS, 101: {"description": "WebSocket: one JSON event a message"}})
    async def events_doc(since: Annotated[int | None, Query(ge=0)] = None) -> JSONResponse:
        """The event stream, a WebSocket: typed events with an agent-wide increasing
        ``seq``; ``since=N`` replays every event after N first (a bounded window: beyond it a
        ``cursor_reset`` event). Without an upgrade: 426."""
        return _error(426, "upgrade_required", "this is a WebSocket: connect with an upgrade")

    @app.websocket(f"{PREFIX}/events")
    async def events_ws(websocket: WebSocket) -> None:
        await stream_events(agent, websocket)

    routes_rich.add_routes(app, agent, ERRORS)  # rich presence and invites
    _document(app)
    return Guard(FastPath(app, agent, error_body), check, allowed_origins=allowed_origins)


def _document(app: FastAPI) -> None:
    """The OpenAPI document: bearer auth everywhere, 400 (not 422) for bad input."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                          description=app.description)
        for ops in doc.get("paths", {}).values():
            for op in ops.values():
                op.get("responses", {}).pop("422", None)
        schemas = doc.get("components", {}).get("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        doc.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "interapp agent token create NAME"}}
        doc["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


async def stream_events(agent: Agent, websocket: WebSocket) -> None:
    """Serve one client of ``/agent/v1/events`` (replay after ``since``, then live)."""
    raw = websocket.query_params.get("since")
    since: int | None = None
    if raw is not None:
        if not raw.isdigit() or len(raw) > 18:
            await websocket.close(code=4400, reason="since must be a whole number ≥ 0")
            return
        since = int(raw)
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    log = agent.log
    if since is None:
        since = log.last_seq
    elif since > log.last_seq or since < log.oldest_seq - 1:
        first = log.oldest_seq
        await websocket.send_json({"seq": first - 1, "type": "cursor_reset", "target": "*",
                                   "message": f"events after {since} are no longer all kept: "
                                   f"replaying from {first}; reload what you show",
                                   "since": since, "oldest": first})
        since = first - 1
    reader = asyncio.create_task(_until_closed(websocket))
    try:
        while not reader.done():
            signal = log.changed  # taken first: an append while reading sets this one
            batch = await log.after(since)
            for item in batch:
                await websocket.send_text(item.text)
                since = item.seq
            if batch:
                continue
            changed = asyncio.create_task(signal.wait())
            await asyncio.wait({changed, reader}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        reader.cancel()
        with contextlib.suppress(Exception):
            await websocket.close()


async def _until_closed(websocket: WebSocket) -> None:
    with contextlib.suppress(Exception):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
