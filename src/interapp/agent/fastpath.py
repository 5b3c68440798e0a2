"""The agent's two hottest routes, answered in front of FastAPI.

``GET /agent/v1/state`` (what every client polls) and ``POST /agent/v1/messages`` (a send)
are most of an embedding application's traffic. FastAPI's per-request machinery (dependency
solving, the exception-handler middleware stack, ``jsonable_encoder`` over the response
model) was about half of each request's time in the agent under cProfile, so these two are
answered here with the *same* pydantic models: the body is validated by
:class:`~interapp.agent.models.MessageIn` and the answer serialized by the route's response
model, so the bytes are what FastAPI would send (a test compares both paths). Anything
unusual — another method or path, a query string, input the model refuses — goes on to
FastAPI unchanged (with the body replayed), so its 400 answers and the OpenAPI document stay
the only definition of them. Hand-written because neither FastAPI nor Starlette offer a
"skip the middleware stack for this route" switch; the server does the same for its hot
reads (``server/api/hotreads.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interapp.agent import models as m
from interapp.agent.core import Agent
from interapp.host import InterappError

__all__ = ["FastPath"]

STATE = "/agent/v1/state"
MESSAGES = "/agent/v1/messages"
ErrorRender = Callable[[InterappError], tuple[int, dict[str, Any]]]


def _json(model: type[BaseModel], value: dict[str, Any]) -> bytes:
    # FastAPI validates the returned dict against the response model, then encodes it with
    # json.dumps(ensure_ascii=False, separators=(",", ":")) — the same here
    return _dumps(model.model_validate(value).model_dump(mode="json", by_alias=True))


def _dumps(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode()


class FastPath:
    """ASGI middleware: ``state`` and ``messages`` directly, everything else to ``app``."""

    def __init__(self, app: ASGIApp, agent: Agent, render_error: ErrorRender) -> None:
        self.app = app
        self.agent = agent
        self.render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == STATE and method == "GET":
            await self._answer(send, 200, _json(m.StateOut, self.agent.state()))
        elif path == MESSAGES and method == "POST":
            await self._send(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _send(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        while True:  # the Guard in front bounds the body's size
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        ctype = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
        try:
            if not ctype.split(b";")[0].strip().lower() == b"application/json":
                raise ValueError("not JSON")  # FastAPI decides what to say
            msg = m.MessageIn.model_validate_json(body)
        except (ValidationError, ValueError):
            await self.app(scope, _replay(body, receive), send)
            return
        try:
            sent = await self.agent.send(msg.target, msg.to, msg.body, msg.client_msg_id)
        except InterappError as exc:
            status, err = self.render_error(exc)
            await self._answer(send, status, _dumps(err))
            return
        await self._answer(send, 201, _json(m.MessageOut, sent))

    @staticmethod
    async def _answer(send: Send, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode()),
                                (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, then: Receive) -> Receive:
    """A ``receive`` that hands ``body`` over again, then is the real one."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await then()

    return receive
