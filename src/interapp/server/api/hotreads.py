"""The hot reads, ``GET /v1/contacts`` and ``GET /v1/me``, answered in front of FastAPI.

Theory of operation
-------------------
Both answers are a function of the caller's account and of nothing that can change without an
event for that account: a buddy's presence or status reaches every buddy as a ``presence``
event, a buddy added or removed is a ``contact_added``/``contact_removed`` event for both, the
caller's own presence is an event for the caller, and usernames and display names never change.
Every event bumps the account's ``last_seq`` in the transaction that makes the change (see
:mod:`interapp.server.events`). So a page of this account is still exact while ``last_seq`` is
the same, in any process sharing the database.

:class:`HotReads` sits inside the body limit and the metrics middleware, in front of FastAPI.
For a ``GET`` of one of :data:`HOT_PATHS` with no query string and a Bearer token it runs **one**
statement — the token, live, joined to its account's ``last_seq`` — and, when it holds the page
this account got at that ``last_seq``, sends those bytes as they are. Anything else goes on to
FastAPI unchanged: a miss (whose response, when 200, is kept with the ``last_seq`` read *before*
FastAPI read the page, so a change committed in between only makes the next request miss), an
unknown, expired or revoked token (FastAPI answers the 401), a query string, a database error.
The bytes sent are FastAPI's own, so the answer is identical either way, and a revoked token is
refused at once (it is looked up on every request).

The pages are kept in a least-recently-used map bounded by :data:`CACHE_BYTES` in all.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interapp.server.api.deps import AUTH_SEQ, scope_allows_api
from interapp.server.tokens import token_hash

__all__ = ["CACHE_BYTES", "HOT_PATHS", "HotReads", "PageCache"]

HOT_PATHS = frozenset({"/v1/contacts", "/v1/me"})
CACHE_BYTES = 4 * 1024 * 1024
"""Bytes of cached pages per process at most (a page of 100 buddies is ~12 KB)."""

log = logging.getLogger("interapp.server.hotreads")


@dataclass(slots=True)
class _Page:
    seq: int
    start: Message
    body: bytes


class PageCache:
    """The pages of one process, least recently used first, :data:`CACHE_BYTES` at most."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._pages: OrderedDict[tuple[str, str], _Page] = OrderedDict()
        self.bytes = 0
        self.hits = 0  # answered from the cache (for tests and the benchmarks)
        self.misses = 0

    def __len__(self) -> int:
        return len(self._pages)

    def get(self, key: tuple[str, str], seq: int) -> _Page | None:
        """The page kept for ``key`` at ``seq``, if any."""
        page = self._pages.get(key)
        if page is None or page.seq != seq:
            self.misses += 1
            return None
        self._pages.move_to_end(key)
        self.hits += 1
        return page

    def put(self, key: tuple[str, str], page: _Page) -> None:
        """Keep ``page`` (replacing an older one), dropping the least recently used."""
        if len(page.body) > self.max_bytes // 8:
            return
        old = self._pages.pop(key, None)
        if old is not None:
            self.bytes -= len(old.body)
        self._pages[key] = page
        self.bytes += len(page.body)
        while self.bytes > self.max_bytes:
            _, dropped = self._pages.popitem(last=False)
            self.bytes -= len(dropped.body)


class HotReads:
    """ASGI middleware serving :data:`HOT_PATHS` from a :class:`PageCache` (module docstring)."""

    def __init__(self, app: ASGIApp, cache: PageCache) -> None:
        self.app, self.cache = app, cache
        self._routes: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a hot read from the cache, or pass the request on."""
        if (scope["type"] != "http" or scope["path"] not in HOT_PATHS
                or scope["method"] != "GET" or scope.get("query_string")):
            await self.app(scope, receive, send)
            return
        token = _bearer(scope["headers"])
        found = None
        if token is not None:
            try:
                found = await scope["app"].state.server.db.read_first(
                    AUTH_SEQ, {"digest": token_hash(token), "now": time.time()})
            except Exception as exc:  # the regular path meets (and maps) it again
                log.debug("hot read fell back: %s", type(exc).__name__)
        if found is None or not scope_allows_api(found[2]):
            await self.app(scope, receive, send)  # the regular path answers (401 / 403)
            return
        key, seq = (scope["path"], str(found[0])), int(found[1])
        page = self.cache.get(key, seq)
        if page is None:
            await self._fill(key, seq, scope, receive, send)
            return
        scope["route"] = self._route(scope)  # the metrics middleware labels by route
        await send(page.start)
        await send({"type": "http.response.body", "body": page.body, "more_body": False})

    async def _fill(self, key: tuple[str, str], seq: int, scope: Scope, receive: Receive,
                    send: Send) -> None:
        """Let FastAPI answer, and keep a 200 answer for ``seq``."""
        start: Message | None = None
        chunks: list[bytes] = []
        complete = False

        async def capture(message: Message) -> None:
            nonlocal start, complete
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                complete = not message.get("more_body", False)
            await send(message)

        await self.app(scope, receive, capture)
        if start is not None and start["status"] == 200 and complete:
            self.cache.put(key, _Page(seq, {"type": "http.response.start", "status": 200,
                                            "headers": list(start.get("headers", []))},
                                      b"".join(chunks)))

    def _route(self, scope: Scope) -> Any:
        path = scope["path"]
        route = self._routes.get(path)
        if route is None:
            route = next((r for r in scope["app"].router.routes
                          if getattr(r, "path", None) == path), None)
            self._routes[path] = route
        return route


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of the first ``Authorization`` header, parsed as FastAPI's ``HTTPBearer``
    parses it (``scheme``, one space, the stripped rest); None when it is not a Bearer one."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            token = rest.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None
