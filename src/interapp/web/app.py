"""The web UI's routes: server-rendered pages (Jinja2), and the agent's API for the pages.

Every action is the agent's (``/agent/v1``, docs/agent.md); nothing here does one itself.
Pages (``/``, sign-in, the unlink confirmation and its result) are complete HTML forms that
work without JavaScript: their handlers call the agent (``POST``/``DELETE /session``,
``DELETE /targets/NAME/link``) and render what it answered. ``static/app.js`` adds the live
parts and calls the agent itself: ``/agent/v1/*`` on this server is forwarded to the agent
with the agent's token added here (:class:`~interapp.web.agentlink.AgentLink`), and
``/agent/v1/events`` is the agent's event WebSocket, carried through. Every route sits behind
:class:`~interapp.web.security.SessionGate` (session, CSRF, Host and Origin), so the browser
needs its session — and never sees the agent's token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from interapp import __version__
from interapp.host import PRESENCE_STATES, InterappError, NotFoundError
from interapp.web.agentlink import PREFIX, AgentLink
from interapp.web.security import CSRF_FIELD, Session, SessionGate, Sessions
from interapp.web.views import LocalView, Snapshot, Views

log = logging.getLogger("interapp.web")
HERE = Path(__file__).parent
PRESENCE = tuple(str(s) for s in PRESENCE_STATES)
PROXY_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]
CLOSE_AGENT_GONE = 1012  # "service restart": the page reconnects and resumes


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return Jinja2Templates(env=env)


def _session(request: Request | WebSocket) -> Session:
    session: Session = request.scope["state"]["session"]
    return session


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _agent_path(request: Request | WebSocket) -> str:
    """The request's path after ``/agent/v1``, still percent-encoded (a ``/`` in a user name
    stays one path segment)."""
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    path = raw.decode("latin-1").split("?", 1)[0]
    return path[len(PREFIX):] if path.startswith(PREFIX) else path


def create_app(agent: AgentLink, sessions: Sessions, *,
               allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]")
               ) -> SessionGate:
    """The ASGI application: the routes below, behind the session gate."""
    templates = _templates()
    views = Views(agent)

    def page(request: Request, template: str, local: LocalView, status: int = 200,
             **context: Any) -> Response:
        return templates.TemplateResponse(request, template, {
            "csrf": _session(request).csrf, "csrf_field": CSRF_FIELD, "version": __version__,
            "presence_states": PRESENCE, "local": local, **context}, status_code=status)

    def unreachable(request: Request, exc: InterappError) -> Response:
        local = LocalView(configured=False, problem=f"{exc.message} (is 'interapp agent' "
                          "stopping? start 'interapp ui' again)")
        return page(request, "setup.html", local, status=503)

    async def snapshot() -> Snapshot:
        return await views.snapshot()

    async def index(request: Request) -> Response:
        try:
            snap = await snapshot()
        except InterappError as exc:
            return unreachable(request, exc)
        local = snap.local
        if not local.configured:
            return page(request, "setup.html", local)
        if not local.signed_in:
            return page(request, "signin.html", local, error="", username=local.username or "")
        people, groups = await views.buddy_list(snap)  # first: invites name the buddies
        return page(request, "index.html", local, targets=snap.targets(), groups=groups,
                    people=people,
                    invites=await views.invites(snap), my_presence=snap.presence)

    async def signin_page(request: Request) -> Response:
        try:
            local = (await snapshot()).local
        except InterappError as exc:
            return unreachable(request, exc)
        return page(request, "signin.html", local, error="", username=local.username or "")

    async def signin(request: Request) -> Response:
        form = await _form(request)
        username = form.get("username", "").strip()
        password = form.get("password", "")
        try:
            local = (await snapshot()).local
        except InterappError as exc:
            return unreachable(request, exc)
        if not local.configured:
            return page(request, "setup.html", local, status=400)
        error = ""
        if not username or not password:
            error = "enter your username and password"
        else:
            try:
                await agent.call("POST", "/session", {"username": username,
                                                      "password": password})
            except InterappError as exc:
                error = exc.message
        if error:
            return page(request, "signin.html", local, status=400, error=error,
                        username=username)
        return RedirectResponse("/", status_code=303)

    async def signout(request: Request) -> Response:
        with contextlib.suppress(InterappError):  # nobody signed in: the same page
            await agent.call("DELETE", "/session")
        return RedirectResponse("/", status_code=303)

    async def targets_fragment(request: Request) -> Response:
        snap = await snapshot()
        return page(request, "_targets.html", snap.local, targets=snap.targets())

    async def buddies_fragment(request: Request) -> Response:
        snap = await snapshot()
        people, groups = await views.buddy_list(snap)
        return page(request, "_buddies.html", snap.local, groups=groups, people=people)

    async def invites_fragment(request: Request) -> Response:
        snap = await snapshot()
        return page(request, "_invites.html", snap.local, invites=await views.invites(snap))

    async def unlink_confirm(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            snap = await snapshot()
        except InterappError as exc:
            return unreachable(request, exc)
        link = snap.links.get(name)
        return page(request, "unlink.html", snap.local, status=200 if link else 404, name=name,
                    link=link, result=None)

    async def unlink_do(request: Request) -> Response:
        name = request.path_params["name"]
        done: dict[str, Any] | None = None
        failure: InterappError | None = None
        try:
            done = await agent.call("DELETE", f"/targets/{quote(name, safe='')}/link")
        except InterappError as exc:
            failure = exc
        try:
            local = (await snapshot()).local
        except InterappError as exc:
            return unreachable(request, exc)
        if done is None:
            assert failure is not None
            return page(request, "unlink.html", local, status=400, name=name, link=None,
                        result={"ok": False, "revoked": False, "note": failure.message})
        return page(request, "unlink.html", local, name=name, link=None,
                    result={"ok": True, "revoked": done["remote_revoked"],
                            "note": done["note"]})

    async def forward(request: Request) -> Response:
        """``/agent/v1/*``: the page's call, to the agent, with the agent's token."""
        try:
            answer = await agent.forward(request.method, _agent_path(request),
                                         request.url.query, await request.body(),
                                         request.headers)
        except InterappError as exc:
            return JSONResponse({"error": exc.code, "message": exc.message}, status_code=503)
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    async def events(websocket: WebSocket) -> None:
        """``/agent/v1/events``: the agent's event WebSocket, carried through."""
        try:
            upstream = await agent.events(websocket.url.query)
        except InterappError:
            await websocket.close(code=1013)  # try again later
            return
        await websocket.accept()
        code = await _carry(upstream, websocket)
        with contextlib.suppress(Exception):
            await upstream.close()
        with contextlib.suppress(Exception):
            await websocket.close(code=code)

    async def ui_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InterappError)
        status = 404 if isinstance(exc, NotFoundError) else 503
        return JSONResponse({"error": exc.code, "message": exc.message}, status_code=status)

    routes = [
        Route("/", index),
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/fragments/targets", targets_fragment),
        Route("/fragments/buddies", buddies_fragment),
        Route("/fragments/invites", invites_fragment),
        Route("/targets/{name}/unlink", unlink_confirm, methods=["GET"]),
        Route("/targets/{name}/unlink", unlink_do, methods=["POST"]),
        WebSocketRoute(f"{PREFIX}/events", events),
        Route(PREFIX + "/{path:path}", forward, methods=PROXY_METHODS),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={InterappError: ui_error})
    return SessionGate(app, sessions, allowed_hosts)


async def _carry(upstream: ClientConnection, websocket: WebSocket) -> int:
    """Events from the agent to the page until either side leaves; the close code to use."""

    async def down() -> int:
        try:
            async for text in upstream:
                await websocket.send_text(text if isinstance(text, str) else text.decode())
        except ConnectionClosed:
            pass
        code = upstream.close_code or CLOSE_AGENT_GONE
        return code if 4000 <= code < 5000 else CLOSE_AGENT_GONE

    async def up() -> int:
        while True:  # the stream is one way: what the page sends is read and dropped
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return 1000

    tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = done.pop()
        return first.result() if not first.cancelled() and first.exception() is None else 1011
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
