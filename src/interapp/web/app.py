"""The web UI's routes: server-rendered pages (Jinja2), a small JSON API and one WebSocket.

Pages (``/``, sign-in, the unlink confirmation and its result) are complete HTML forms that work
without JavaScript; ``static/app.js`` adds the live parts: it swaps in the server-rendered
fragments ``/fragments/targets`` and ``/fragments/buddies`` when they change, shows prompts,
and runs the chat pane (history, live messages, an outbox in ``localStorage``). Every route sits
behind :class:`~interapp.web.security.SessionGate` (session + CSRF).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.websockets import WebSocket, WebSocketDisconnect

from interapp import __version__
from interapp.host import ConfigError, InterappError, NotFoundError, Secret
from interapp.web.security import CSRF_FIELD, Session, SessionGate, Sessions
from interapp.web.service import PRESENCE, Retryable, UIService

log = logging.getLogger("interapp.web")
HERE = Path(__file__).parent

Handler = Callable[[Request], Awaitable[Response]]


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return Jinja2Templates(env=env)


def _session(request: Request | WebSocket) -> Session:
    session: Session = request.scope["state"]["session"]
    return session


def _error(exc: InterappError) -> JSONResponse:
    if isinstance(exc, Retryable):
        status = 503
    elif isinstance(exc, NotFoundError):
        status = 404
    else:
        status = 422
    return JSONResponse({"error": exc.code, "message": exc.message}, status_code=status)


async def _json(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise ConfigError("the request body is not JSON") from exc
    except RecursionError:  # e.g. 5,000 nested arrays
        raise ConfigError("the request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError("the request body must be a JSON object")
    return data


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def create_app(service: UIService, sessions: Sessions, *,
               allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]")
               ) -> SessionGate:
    """The ASGI application: the routes below, behind the session gate."""
    templates = _templates()

    def page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("local", service.local_view())
        return templates.TemplateResponse(request, template, {
            "csrf": _session(request).csrf, "csrf_field": CSRF_FIELD, "version": __version__,
            "presence_states": PRESENCE, **context}, status_code=status)

    async def index(request: Request) -> Response:
        local = service.local_view()
        if not local.configured:
            return page(request, "setup.html", local=local)
        if not local.signed_in:
            return page(request, "signin.html", local=local, error="",
                        username=local.username or "")
        return page(request, "index.html", local=local, targets=service.targets(),
                    groups=service.buddy_groups(), my_presence=service.my_presence)

    async def signin_page(request: Request) -> Response:
        local = service.local_view()
        return page(request, "signin.html", local=local, error="",
                    username=local.username or "")

    async def signin(request: Request) -> Response:
        form = await _form(request)
        username = form.get("username", "").strip()
        password = form.get("password", "")
        local = service.local_view()
        if not local.configured:
            return page(request, "setup.html", status=400, local=local)
        error = ""
        if not username or not password:
            error = "enter your username and password"
        else:
            try:
                await service.sign_in(username, Secret(password))
            except InterappError as exc:
                error = exc.message
        if error:
            return page(request, "signin.html", status=400, error=error, username=username)
        return RedirectResponse("/", status_code=303)

    async def signout(request: Request) -> Response:
        await service.sign_out()
        return RedirectResponse("/", status_code=303)

    async def targets_fragment(request: Request) -> Response:
        return page(request, "_targets.html", targets=service.targets())

    async def buddies_fragment(request: Request) -> Response:
        return page(request, "_buddies.html", groups=service.buddy_groups())

    async def unlink_confirm(request: Request) -> Response:
        name = request.path_params["name"]
        await service.tick()
        link = service.link_of(name)
        if link is None:
            return page(request, "unlink.html", status=404, name=name, link=None, result=None)
        return page(request, "unlink.html", name=name, link=link, result=None)

    async def unlink_do(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            done = await service.unlink(name)
        except InterappError as exc:
            return page(request, "unlink.html", status=400, name=name, link=None,
                        result={"ok": False, "revoked": False, "note": exc.message})
        return page(request, "unlink.html", name=name, link=None,
                    result={"ok": True, "revoked": done.remote_revoked, "note": done.note})

    async def api_state(request: Request) -> Response:
        local = service.local_view()
        return JSONResponse({
            "local": {"server": local.server, "username": local.username,
                      "signed_in": local.signed_in},
            "targets": [t.as_dict() for t in service.targets()],
            "buddies": [{"target": g.target, "account": g.account,
                         "buddies": [b.as_dict() for b in g.buddies]}
                        for g in service.buddy_groups()],
            "prompts": service.prompter.describe()})

    async def api_connect(request: Request) -> Response:
        name = request.path_params["name"]
        started = service.start_connect(name)
        return JSONResponse({"target": name, "started": started}, status_code=202)

    async def api_prompt(request: Request) -> Response:
        data = await _json(request)
        answers = data.get("answers")
        if data.get("decline"):
            answers = None
        elif not isinstance(answers, dict):
            raise ConfigError("answers must be an object")
        service.prompter.answer(request.path_params["id"], answers)
        return JSONResponse({"ok": True})

    async def api_history(request: Request) -> Response:
        q = request.query_params
        target, user = q.get("target", ""), q.get("user", "")
        if not target or not user:
            raise ConfigError("target and user are required")
        return JSONResponse(await service.history(target, user, q.get("before") or None))

    async def api_send(request: Request) -> Response:
        data = await _json(request)
        fields = [data.get(k) for k in ("target", "to", "body", "client_msg_id")]
        if not all(isinstance(v, str) for v in fields):
            raise ConfigError("target, to, body and client_msg_id are required strings")
        target, to, body, cmid = (str(v) for v in fields)
        return JSONResponse(await service.send(target, to, body, cmid))

    async def api_presence(request: Request) -> Response:
        data = await _json(request)
        state, text = data.get("state", "online"), data.get("status_text", "")
        if not isinstance(state, str) or not isinstance(text, str):
            raise ConfigError("state and status_text must be strings")
        return JSONResponse(await service.set_presence(state, text))

    async def ws_events(websocket: WebSocket) -> None:
        await websocket.accept()
        viewer = service.browsers.subscribe()
        try:
            await websocket.send_json({"type": "hello", "prompts": service.prompter.describe()})
            reader = asyncio.create_task(_drain(websocket))
            dropped = asyncio.create_task(viewer.dropped.wait())
            try:
                while True:
                    get = asyncio.create_task(viewer.queue.get())
                    done, _ = await asyncio.wait({get, reader, dropped},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if get not in done:
                        get.cancel()
                        break
                    await websocket.send_json(get.result())
            finally:
                for task in (reader, dropped):
                    task.cancel()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            service.browsers.unsubscribe(viewer)
            with contextlib.suppress(Exception):
                await websocket.close()

    def guarded(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except InterappError as exc:
                return _error(exc)
        return run

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    routes = [
        Route("/", index),
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/fragments/targets", targets_fragment),
        Route("/fragments/buddies", buddies_fragment),
        Route("/targets/{name}/unlink", unlink_confirm, methods=["GET"]),
        Route("/targets/{name}/unlink", unlink_do, methods=["POST"]),
        Route("/api/state", guarded(api_state)),
        Route("/api/targets/{name}/connect", guarded(api_connect), methods=["POST"]),
        Route("/api/prompts/{id}", guarded(api_prompt), methods=["POST"]),
        Route("/api/history", guarded(api_history)),
        Route("/api/messages", guarded(api_send), methods=["POST"]),
        Route("/api/presence", guarded(api_presence), methods=["POST"]),
        WebSocketRoute("/ws", ws_events),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    return SessionGate(app, sessions, allowed_hosts)


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the page sends, until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
