"""Sending messages on the open event stream instead of one HTTP request each.

Theory of operation: while :meth:`InterappPlugin.events` holds a WebSocket, it *attaches* it
here; :meth:`StreamSends.send` writes a ``send`` frame on it and waits for the server's ``sent``
or ``send_failed`` answer, which the events loop hands back through :meth:`StreamSends.answer`
(those frames carry no ``seq`` and are never yielded as events). Whenever the stream cannot
answer — none is open, it drops, the answer is late, or the server says the stream's token is
no longer good (401) or it is unavailable (503) — ``send`` returns None and the plug-in posts
the message over HTTP instead, with the *same* ``client_msg_id``: the server stores a message
once per ``client_msg_id``, so a message that did go through the stream is not duplicated.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from websockets.exceptions import WebSocketException

from interapp.errors import from_wire

ANSWER_TIMEOUT = 10.0
_FALL_BACK = {401, 503}  # the HTTP path refreshes the token / retries with the server's hint


class _Socket(Protocol):
    async def send(self, message: str) -> None: ...


class StreamSends:
    """Send frames on the attached stream and match their answers by ``client_msg_id``."""

    def __init__(self) -> None:
        self._socket: _Socket | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.last_fallback: str | None = None  # why the last send went over HTTP (diagnostics)

    @property
    def attached(self) -> bool:
        """Whether a stream is open to send on."""
        return self._socket is not None

    def attach(self, socket: _Socket) -> None:
        """The events loop opened a stream."""
        self._socket = socket

    def detach(self, socket: _Socket | None = None) -> None:
        """The stream ``socket`` closed (None: whichever is attached): every waiting send falls
        back to HTTP. A late detach of an older stream leaves a newer one attached."""
        if socket is not None and socket is not self._socket:
            return
        self._socket = None
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_result({})

    def answer(self, frame: dict[str, Any]) -> bool:
        """Take a ``sent``/``send_failed`` frame; False for any other frame."""
        if frame.get("type") not in ("sent", "send_failed"):
            return False
        future = self._waiting.pop(str(frame.get("client_msg_id")), None)
        if future is not None and not future.done():
            future.set_result(frame)
        return True

    async def send(self, to: str, body: str, client_msg_id: str) -> dict[str, Any] | None:
        """The stored message, or None when the caller should use HTTP instead."""
        socket = self._socket
        if socket is None or client_msg_id in self._waiting:
            self.last_fallback = "no stream" if socket is None else "same id in flight"
            return None
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[client_msg_id] = future
        try:
            await socket.send(json.dumps({"type": "send", "to": to, "body": body,
                                          "client_msg_id": client_msg_id}))
            frame = await asyncio.wait_for(future, ANSWER_TIMEOUT)
        except (OSError, TimeoutError, ConnectionError, WebSocketException) as exc:
            self.last_fallback = f"stream failed: {type(exc).__name__}"  # closed under the send
            return None
        finally:
            self._waiting.pop(client_msg_id, None)
        if frame.get("type") == "sent" and isinstance(frame.get("message"), dict):
            message: dict[str, Any] = frame["message"]
            return message
        status = int(frame.get("status") or 0)
        if status == 401 and self._socket is socket:
            # the stream's token expired or was revoked: it still receives, but sends go over
            # HTTP (with the current token) until the stream is opened again
            self._socket = None
        if not frame or status in _FALL_BACK:
            self.last_fallback = f"answer {status} {frame.get('error')}" if frame else "detached"
            return None
        raise from_wire(status, frame)
