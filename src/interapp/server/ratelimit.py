"""Failed-login limits per account and per client address.

Theory of operation: each failed password login adds one to two fixed-window counters, one for
the account and one for the client address. While either counter is at its limit, logins for
that key are refused with 429 and ``Retry-After`` *before* the password is checked, so a locked
account never reveals whether a guessed password was right. A success clears the account's
counter. Counters live in process memory, or in Redis when ``--redis`` is set so that limits hold
across every server process. While Redis does not answer, password logins are refused with 503
and ``Retry-After`` (never let through uncounted, never a 500); they work again as soon as Redis
is back (its counters may then have been reset, which only forgives failures).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

from interapp.errors import UnavailableError

if TYPE_CHECKING:  # imported only by servers started with --redis
    from redis.asyncio import Redis

#: Seconds a client is asked to wait while Redis does not answer.
REDIS_RETRY_AFTER = 1.0


class LoginLimiter(Protocol):
    """The interface both back-ends implement."""

    async def retry_after(self, keys: list[str]) -> float | None:
        """Seconds to wait when any key is locked, else None."""

    async def failed(self, keys: list[str]) -> None:
        """Count one failure against every key."""

    async def succeeded(self, key: str) -> None:
        """Clear the counter of ``key``."""


class MemoryLimiter:
    """Fixed-window counters in this process."""

    def __init__(self, limits: dict[str, int], window: float) -> None:
        self._limits = limits  # key prefix ("acct", "addr") -> max failures per window
        self._window = window
        self._counts: dict[str, tuple[float, int]] = {}

    def _limit(self, key: str) -> int:
        return self._limits[key.split(":", 1)[0]]

    async def retry_after(self, keys: list[str]) -> float | None:
        """Seconds to wait when any key is locked, else None."""
        now = time.monotonic()
        waits = []
        for key in keys:
            start, count = self._counts.get(key, (now, 0))
            if now - start >= self._window:
                self._counts.pop(key, None)
            elif count >= self._limit(key):
                waits.append(self._window - (now - start))
        return max(waits) if waits else None

    async def failed(self, keys: list[str]) -> None:
        """Count one failure against every key."""
        now = time.monotonic()
        if len(self._counts) > 100_000:  # bound memory under a spray of addresses
            self._counts = {k: v for k, v in self._counts.items() if now - v[0] < self._window}
        for key in keys:
            start, count = self._counts.get(key, (now, 0))
            if now - start >= self._window:
                start, count = now, 0
            self._counts[key] = (start, count + 1)

    async def succeeded(self, key: str) -> None:
        """Clear the counter of ``key``."""
        self._counts.pop(key, None)


@asynccontextmanager
async def _redis_available() -> AsyncIterator[None]:
    """Turn a Redis failure into :class:`UnavailableError` (HTTP 503 + ``Retry-After``)."""
    from redis.exceptions import RedisError  # imported only by servers that use Redis

    try:
        yield
    except RedisError as exc:
        raise UnavailableError(f"login limits unavailable (Redis: {type(exc).__name__})",
                               retry_after=REDIS_RETRY_AFTER) from exc


class RedisLimiter:
    """The same counters in Redis (``INCR`` + ``EXPIRE``), shared by all processes."""

    def __init__(self, redis: Redis, prefix: str, limits: dict[str, int], window: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._limits = limits
        self._window = window

    def _k(self, key: str) -> str:
        return f"{self._prefix}:rl:{key}"

    async def retry_after(self, keys: list[str]) -> float | None:
        """Seconds to wait when any key is locked, else None."""
        async with _redis_available():
            values = await self._redis.mget([self._k(k) for k in keys])
            waits = []
            for key, value in zip(keys, values, strict=True):
                if value is not None and int(value) >= self._limits[key.split(":", 1)[0]]:
                    ttl = await self._redis.ttl(self._k(key))
                    waits.append(float(max(ttl, 1)))
        return max(waits) if waits else None

    async def failed(self, keys: list[str]) -> None:
        """Count one failure against every key."""
        async with _redis_available(), self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.incr(self._k(key))
                pipe.expire(self._k(key), self._window, nx=True)
            await pipe.execute()

    async def succeeded(self, key: str) -> None:
        """Clear the counter of ``key``."""
        async with _redis_available():
            await self._redis.delete(self._k(key))
