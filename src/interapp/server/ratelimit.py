"""Login limits per account and per client address, reserved before the password is checked.

Theory of operation: every password login first *reserves* one attempt on two fixed-window
counters, one for the account and one for the client address, in one atomic step: if either is
at its limit nothing is counted and the login is refused with 429 and ``Retry-After``, before the
password is checked, so a locked account never reveals whether a guessed password was right;
otherwise both counters go up by one *before* the (slow) argon2 verification starts. A burst of
concurrent guesses therefore gets at most the limit's worth of verifications, however they
interleave. A failed login keeps its reservation (it is the failure count); a successful one
clears the account's counter and hands the address its slot back. Counters live in process
memory (the check-and-count has no ``await`` in it, so it is atomic on the event loop), or in
Redis when ``--redis`` is set, where one Lua script does the check-and-count atomically for all
server processes. While Redis does not answer, password logins are refused with 503 and
``Retry-After`` (never let through uncounted, never a 500); they work again as soon as Redis is
back (its counters may then have been reset, which only forgives failures).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

from interapp.errors import UnavailableError

if TYPE_CHECKING:  # imported only by servers started with --redis
    from redis.asyncio import Redis

log = logging.getLogger("interapp.server.ratelimit")

#: Seconds a client is asked to wait while Redis does not answer.
REDIS_RETRY_AFTER = 1.0


class LoginLimiter(Protocol):
    """The interface both back-ends implement."""

    async def reserve(self, keys: list[str]) -> float | None:
        """Atomically: seconds to wait when any key is at its limit (nothing is counted then),
        else count one attempt against every key and return None."""

    async def succeeded(self, clear: list[str], refund: list[str]) -> None:
        """A reserved attempt succeeded: reset the ``clear`` counters, give ``refund`` back
        their slot. Best effort: never raises."""


class MemoryLimiter:
    """Fixed-window counters in this process."""

    def __init__(self, limits: dict[str, int], window: float) -> None:
        self._limits = limits  # key prefix ("acct", "addr") -> max attempts per window
        self._window = window
        self._counts: dict[str, tuple[float, int]] = {}

    def _limit(self, key: str) -> int:
        return self._limits[key.split(":", 1)[0]]

    def _current(self, key: str, now: float) -> tuple[float, int]:
        start, count = self._counts.get(key, (now, 0))
        return (now, 0) if now - start >= self._window else (start, count)

    async def reserve(self, keys: list[str]) -> float | None:
        """Check and count in one step (no ``await`` in between: atomic on the event loop)."""
        now = time.monotonic()
        waits = []
        for key in keys:
            start, count = self._current(key, now)
            if count >= self._limit(key):
                waits.append(self._window - (now - start))
        if waits:
            return max(waits)
        if len(self._counts) > 100_000:  # bound memory under a spray of addresses
            self._counts = {k: v for k, v in self._counts.items() if now - v[0] < self._window}
        for key in keys:
            start, count = self._current(key, now)
            self._counts[key] = (start, count + 1)
        return None

    async def succeeded(self, clear: list[str], refund: list[str]) -> None:
        """Reset ``clear``; give each of ``refund`` its slot back."""
        for key in clear:
            self._counts.pop(key, None)
        now = time.monotonic()
        for key in refund:
            start, count = self._current(key, now)
            if count > 0:
                self._counts[key] = (start, count - 1)


@asynccontextmanager
async def _redis_available() -> AsyncIterator[None]:
    """Turn a Redis failure into :class:`UnavailableError` (HTTP 503 + ``Retry-After``)."""
    from redis.exceptions import RedisError  # imported only by servers that use Redis

    try:
        yield
    except RedisError as exc:
        raise UnavailableError(f"login limits unavailable (Redis: {type(exc).__name__})",
                               retry_after=REDIS_RETRY_AFTER) from exc


# Hand-written Lua because no Redis rate-limit library reserves on *several* counters at once
# (the `limits` package hits one key per call, so two calls would race each other again).
# KEYS: the counters; ARGV[1]: the window in seconds, ARGV[2..]: each key's limit. Returns 0
# when the attempt was counted on every key, else the longest wait in seconds (nothing counted).
_RESERVE = """
local wait = 0
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= tonumber(ARGV[i + 1]) then
    local ttl = redis.call('TTL', key)
    if ttl < 1 then ttl = 1 end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, ARGV[1]) end
end
return 0
"""
# KEYS[1..n]: counters to clear, then counters to refund; ARGV[1]: n.
_SUCCEEDED = """
local n = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if i <= n then redis.call('DEL', key)
  elseif tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
return 0
"""


class RedisLimiter:
    """The same counters in Redis, shared by all processes; one Lua script per step."""

    def __init__(self, redis: Redis, prefix: str, limits: dict[str, int], window: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._limits = limits
        self._window = window
        self._reserve: Any = redis.register_script(_RESERVE)
        self._succeeded: Any = redis.register_script(_SUCCEEDED)

    def _k(self, key: str) -> str:
        return f"{self._prefix}:rl:{key}"

    async def reserve(self, keys: list[str]) -> float | None:
        """Check and count in one script: atomic across every server process."""
        limits = [self._limits[key.split(":", 1)[0]] for key in keys]
        async with _redis_available():
            wait = int(await self._reserve(keys=[self._k(k) for k in keys],
                                           args=[self._window, *limits]))
        return float(wait) if wait > 0 else None

    async def succeeded(self, clear: list[str], refund: list[str]) -> None:
        """Reset ``clear``; give each of ``refund`` its slot back (a Redis failure is logged:
        the attempt was counted and the password verified, so the login stands)."""
        try:
            async with _redis_available():
                await self._succeeded(keys=[self._k(k) for k in [*clear, *refund]],
                                      args=[len(clear)])
        except UnavailableError as exc:
            log.warning("could not reset login counters after a success: %s", exc.message)
