"""A small client of the Matrix client-server API (httpx), with Matrix errors mapped to interapp's.

Error mapping (the host turns these into link states):

* network error, timeout, any 5xx → :class:`~interapp.errors.ConnectionLost` (degraded);
* 429 / ``M_LIMIT_EXCEEDED`` → the ``retry_after_ms`` hint is waited out and the call retried
  while the total wait stays within ``max_rate_wait``; then
  :class:`~interapp.errors.RateLimited` with ``retry_after`` in seconds;
* 401 / ``M_UNKNOWN_TOKEN`` / ``M_MISSING_TOKEN`` → :class:`~interapp.errors.Unauthorized` (the
  host re-runs its flow and the link becomes needs_reauth);
* 403 → :class:`~interapp.errors.Forbidden` (a refused ``/login`` becomes
  :class:`~interapp.errors.NeedsReauth` in the client), 404 →
  :class:`~interapp.errors.ApiNotFound`, other 4xx → :class:`~interapp.errors.BadRequest`.
  Messages start with the Matrix ``errcode``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from interapp.errors import (
    ApiError,
    ApiNotFound,
    BadRequest,
    ConnectionLost,
    Forbidden,
    RateLimited,
    Unauthorized,
)
from interapp.secret import Secret

CLIENT_PREFIX = "/_matrix/client/v3"
TOKEN_ERRORS = frozenset({"M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"})


def q(part: str) -> str:
    """Quote one path segment (room ids, user ids, transaction ids)."""
    return quote(part, safe="")


def retry_after(resp: httpx.Response, body: Mapping[str, Any]) -> float:
    """Seconds to wait, from ``retry_after_ms`` or the ``Retry-After`` header (default 5 s)."""
    ms = body.get("retry_after_ms")
    if isinstance(ms, int | float) and ms >= 0:
        return float(ms) / 1000.0
    header = resp.headers.get("Retry-After", "")
    try:
        return max(0.0, float(header))
    except ValueError:
        return 5.0


def error_for(resp: httpx.Response) -> ApiError | ConnectionLost:
    """The interapp error for a non-2xx Matrix response (its message starts with the errcode)."""
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    errcode = str(body.get("errcode", ""))
    text = str(body.get("error", "") or resp.reason_phrase or f"HTTP {resp.status_code}")
    message = f"{errcode}: {text}" if errcode else text
    status = resp.status_code
    if status == 429 or errcode == "M_LIMIT_EXCEEDED":
        return RateLimited(message, retry_after=retry_after(resp, body))
    if status == 401 or errcode in TOKEN_ERRORS:
        return Unauthorized(message + (" (soft logout)" if body.get("soft_logout") else ""))
    if status == 403:
        return Forbidden(message)
    if status == 404:
        return ApiNotFound(message)
    if status >= 500:
        return ConnectionLost(f"homeserver failed: HTTP {status} {message}")
    return BadRequest(message)


class MatrixApi:
    """The client-server API of one homeserver, as one user (once ``access_token`` is set)."""

    def __init__(self, base_url: str, *, max_rate_wait: float = 10.0,
                 timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_rate_wait = max_rate_wait
        self.access_token: Secret | None = None
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                       headers={"User-Agent": "interapp-matrix"})
        #: (number of 429 answers honoured, seconds slept for them): for tests and logs
        self.rate_limited: tuple[int, float] = (0, 0.0)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      params: Mapping[str, str] | None = None, auth: bool = True,
                      token: Secret | None = None, read_timeout: float | None = None,
                      prefix: str = CLIENT_PREFIX, max_rate_wait: float | None = None
                      ) -> dict[str, Any]:
        """One API call; honours 429 hints up to ``max_rate_wait`` s in total (see module)."""
        headers: dict[str, str] = {}
        bearer = token or (self.access_token if auth else None)
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer.reveal()}"
        budget = self.max_rate_wait if max_rate_wait is None else max_rate_wait
        waited = 0.0
        while True:
            try:
                resp = await self._http.request(
                    method, prefix + path, headers=headers, params=params,
                    content=None if json_body is None else json.dumps(json_body).encode(),
                    timeout=httpx.USE_CLIENT_DEFAULT if read_timeout is None else read_timeout)
            except httpx.TransportError as exc:
                raise ConnectionLost(f"homeserver {self.base_url} unreachable: "
                                     f"{type(exc).__name__}") from exc
            if resp.is_success:
                try:
                    data = resp.json()
                except ValueError as exc:
                    raise ApiError(f"homeserver sent invalid JSON for {path}") from exc
                return data if isinstance(data, dict) else {"value": data}
            error = error_for(resp)
            if isinstance(error, RateLimited):
                wait = error.retry_after or 1.0
                if waited + wait <= budget:
                    count, slept = self.rate_limited
                    self.rate_limited = (count + 1, slept + wait)
                    waited += wait
                    await asyncio.sleep(wait)
                    continue
            raise error

    async def long_poll(self, path: str, params: Mapping[str, str], wait: float
                        ) -> dict[str, Any]:
        """A long-polling GET (``/sync``): the read timeout is the server's wait + 15 s."""
        return await self.request("GET", path, params=params, read_timeout=wait + 15.0,
                                  max_rate_wait=0.0)


def now_iso(ms: float | None = None) -> str:
    """An RFC 3339 UTC timestamp with milliseconds (the contract's ``sent_at`` format)."""
    from datetime import UTC, datetime

    ts = time.time() if ms is None else ms / 1000.0
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
