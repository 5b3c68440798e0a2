"""Opaque random tokens, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import os
import secrets
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


def sortable_id() -> str:
    """A 25-hex-character id that sorts by creation time (milliseconds, then 48 random bits)."""
    return f"{int(time.time() * 1000):013x}{os.urandom(6).hex()}"
