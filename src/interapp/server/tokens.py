"""Opaque random tokens, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time


def new_token(prefix: str) -> str:
    """A fresh 256-bit random token, with a short prefix telling its kind (``ia_at_…``)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    """The hex SHA-256 under which a token is stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_id() -> str:
    """A random 128-bit id as 32 hex characters."""
    return secrets.token_hex(16)


_RANDOM_BITS = 48
_last_id = [0, 0]  # milliseconds and random part of the newest sortable id of this process
_id_lock = threading.Lock()


def sortable_id() -> str:
    """A 25-hex-character id that sorts by creation time: milliseconds, then 48 bits.

    Monotonic within a process (as ULID's monotonic mode): an id made in the same millisecond
    as the one before (or after the clock stepped back) takes that one's time and its random
    part plus one, so messages stored one after another keep their order even inside one
    transaction. The random part starts below 2**47, leaving room for the increments.
    """
    now = int(time.time() * 1000)
    with _id_lock:
        last_ms, last_random = _last_id
        if now > last_ms:
            ms, rnd = now, int.from_bytes(os.urandom(6)) >> 1
        elif last_random + 1 < 1 << _RANDOM_BITS:
            ms, rnd = last_ms, last_random + 1
        else:  # the random part ran out (2**47 ids or more in one millisecond): next ms
            ms, rnd = last_ms + 1, 0
        _last_id[:] = [ms, rnd]
    return f"{ms:013x}{rnd:012x}"
