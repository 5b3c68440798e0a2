"""The UI server's line to the agent: find it (or start it), call it, forward the pages to it.

Theory of operation: the web UI does nothing itself; every action is the agent's
(``/agent/v1``, see ``docs/agent.md``), so there is one implementation of each. When
:meth:`AgentLink.start` runs, an agent that already serves the data folder (``agent.json``, a
live pid, a socket that answers: :func:`~interapp.agent.client.find_agent`) is *reused*;
otherwise the UI server starts one in its own process (:func:`~interapp.agent.server.serving`)
that lives as long as the UI does — and serves the command line meanwhile, as any agent does.

Either way the UI talks to it over its Unix socket with the token the agent wrote for its
own user (``agent.token``); the token stays in the UI server. :meth:`AgentLink.call` is for the
pages the UI server renders (state, links, buddies, sign-in, unlink); :meth:`AgentLink.forward`
and :meth:`AgentLink.events` carry the browser's own ``/agent/v1`` requests and its event
WebSocket. A reused agent may restart (a new token) or stop: on a refused token or a socket
that does not answer the link looks for the agent again, once, and when none runs any more it
starts its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, unix_connect

from interapp.agent.client import AgentEndpoint, error_from, find_agent
from interapp.agent.server import serving
from interapp.host import ConnectionLost, InterappError

log = logging.getLogger("interapp.web")
PREFIX = "/agent/v1"
TIMEOUT = httpx.Timeout(660.0, connect=5.0)  # a prompt's answer waits for the sign-in
FORWARDED_HEADERS = ("content-type", "accept")


@dataclass(frozen=True)
class Answer:
    """What the agent answered to a forwarded request."""

    status: int
    body: bytes
    content_type: str


class AgentLink:
    """The agent of one data folder, as the UI server uses it (see the module docstring)."""

    def __init__(self, home: Path, *, env: Mapping[str, str] | None = None,
                 passphrase: Callable[[], str] | None = None,
                 announce: Callable[[str], None] | None = None) -> None:
        self.home = home
        self.env = env
        self.passphrase = passphrase
        self.announce = announce or (lambda line: None)
        self.endpoint: AgentEndpoint | None = None
        self.own = False
        """True when this UI server started the agent (it stops with the UI)."""
        self._stack = contextlib.AsyncExitStack()
        self._http: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> AgentEndpoint:
        """Reuse the agent of the data folder, or start one in this process."""
        async with self._lock:
            return await self._resolve(None)

    async def _resolve(self, stale: AgentEndpoint | None) -> AgentEndpoint:
        """The endpoint to use; another one when ``stale`` is the one that failed."""
        if self.endpoint is not None and self.endpoint != stale:
            return self.endpoint
        found = await asyncio.to_thread(find_agent, self.home)
        if found is not None:
            if found == stale:  # the same agent with the same token: nothing better to use
                raise ConnectionLost("the interapp agent does not take this UI's requests "
                                     "now; try again")
            await self._use(found)
            self.announce(f"interapp ui: using the agent of this data folder (pid "
                          f"{found.pid}, {found.socket})")
            return found
        running = await self._stack.enter_async_context(serving(
            self.home, env=self.env, passphrase=self.passphrase, announce=lambda s: None))
        self.own = True
        endpoint = AgentEndpoint(self.home, running.socket, running.token,
                                 int(running.status["pid"]), str(running.status["started_at"]),
                                 running.port)
        await self._use(endpoint)
        self.announce(f"interapp ui: started the agent of this data folder ({running.socket}); "
                      "the command line uses it while the UI runs")
        return endpoint

    async def _use(self, endpoint: AgentEndpoint) -> None:
        if self._http is not None:
            await self._http.aclose()
        self.endpoint = endpoint
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(endpoint.socket)),
            base_url="http://agent", timeout=TIMEOUT,
            headers={"Authorization": f"Bearer {endpoint.token}"})

    async def aclose(self) -> None:
        """Stop using the agent; stop it when this UI server started it."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        await self._stack.aclose()

    # --- requests -------------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, params: Any,
                       content: bytes | None, headers: Mapping[str, str]) -> httpx.Response:
        for attempt in (1, 2):
            async with self._lock:
                endpoint = await self._resolve(None)
                http = self._http
            assert http is not None
            try:
                response = await http.request(method, PREFIX + path, params=params,
                                              content=content, headers=dict(headers))
            except httpx.ConnectError as exc:  # never reached it: safe to send again
                if attempt == 2:
                    raise ConnectionLost("the interapp agent does not answer") from exc
                await self._replace(endpoint)
                continue
            except httpx.TransportError as exc:  # it may have acted: only a read is repeated
                if attempt == 2 or method not in ("GET", "HEAD"):
                    raise ConnectionLost("the interapp agent stopped answering") from exc
                await self._replace(endpoint)
                continue
            if response.status_code == 401 and attempt == 1:  # restarted: a new token
                await self._replace(endpoint)
                continue
            return response
        raise ConnectionLost("the interapp agent does not answer")

    async def _replace(self, stale: AgentEndpoint) -> None:
        async with self._lock:
            try:
                await self._resolve(stale)
            except InterappError:
                raise
            except Exception as exc:  # e.g. an agent starting here at the same moment
                log.warning("finding the agent again failed: %s", type(exc).__name__)
                raise ConnectionLost("the interapp agent does not answer") from exc

    async def call(self, method: str, path: str, body: Any = None,
                   params: Mapping[str, str] | None = None) -> Any:
        """One call to the agent; its JSON answer, or the host error it answered with."""
        content = None
        headers: dict[str, str] = {}
        if body is not None:
            content = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        response = await self._request(method, path, params=params, content=content,
                                       headers=headers)
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            raise error_from(data, response.status_code)
        return data

    async def forward(self, method: str, path: str, query: str, body: bytes,
                      headers: Mapping[str, str]) -> Answer:
        """The browser's request, as the agent answers it (with the agent's token added;
        only ``Content-Type`` and ``Accept`` of the browser's headers go along)."""
        sent = {k: v for k, v in headers.items() if k.lower() in FORWARDED_HEADERS}
        params = httpx.QueryParams(query) if query else None
        response = await self._request(method, path, params=params, content=body or None,
                                       headers=sent)
        return Answer(response.status_code, response.content,
                      response.headers.get("content-type", "application/json"))

    async def events(self, query: str) -> ClientConnection:
        """The agent's event WebSocket (``query``: the browser's, e.g. ``since=N``)."""
        for attempt in (1, 2):
            async with self._lock:
                endpoint = await self._resolve(None)
            try:
                return await unix_connect(
                    str(endpoint.socket), f"ws://agent{PREFIX}/events"
                    f"{'?' + query if query else ''}",
                    additional_headers={"Authorization": f"Bearer {endpoint.token}"},
                    max_size=1 << 20, open_timeout=10)
            except Exception as exc:
                if attempt == 2:
                    raise ConnectionLost("the interapp agent does not answer") from exc
                await self._replace(endpoint)
        raise ConnectionLost("the interapp agent does not answer")
