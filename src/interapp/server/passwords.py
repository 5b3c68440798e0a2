"""argon2id password hashing, off the event loop.

Parameters are OWASP's minimum for argon2id (m = 19 MiB, t = 2, p = 1). Hashing runs in worker
threads bounded by a capacity limiter, so a burst of password logins saturates those threads
and never the event loop that serves every other request.
"""

from __future__ import annotations

import anyio
from anyio import CapacityLimiter
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from interapp.secret import Secret

_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified against when the user does not exist, so the timing does not tell who exists.
_DUMMY_HASH = _HASHER.hash("interapp-dummy-password")


class Passwords:
    """Hash and verify passwords in a bounded thread pool."""

    def __init__(self, threads: int = 2) -> None:
        self._limiter = CapacityLimiter(threads)

    async def hash(self, password: Secret) -> str:
        """Return the argon2id hash of ``password``."""
        return await anyio.to_thread.run_sync(_HASHER.hash, password.reveal(),
                                              limiter=self._limiter)

    async def verify(self, stored_hash: str | None, password: Secret) -> bool:
        """True when ``password`` matches; a missing hash still costs one verification."""
        return await anyio.to_thread.run_sync(verify_sync, stored_hash, password,
                                              limiter=self._limiter)


def hash_sync(password: Secret) -> str:
    """Hash synchronously (admin commands)."""
    return _HASHER.hash(password.reveal())


def verify_sync(stored_hash: str | None, password: Secret) -> bool:
    """Verify synchronously; constant work whether or not the user exists."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password.reveal()) and bool(stored_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
