"""Who may use the agent's API: named bearer tokens, stored hashed, and the CLI's own token.

``interapp agent token create NAME`` makes a random token (256 bits, ``iat_`` + base64url),
prints it once and stores only its SHA-256 in ``agent-tokens.json`` (mode 0600): a slow hash
(argon2) buys nothing for a secret of 256 random bits, and a plain digest lets every request be
checked in microseconds. A running agent reads the file again when it changes, so a token
created or revoked while it runs counts within a second (the agent re-reads it off the event
loop).

The agent also writes ``agent.token`` (mode 0600) at start: a fresh token for its own user's
command line, which reads it to talk to the agent over the Unix socket. It is not in the list
and ends with the agent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from interapp.errors import ConfigError, NotFoundError

TOKENS_FILE = "agent-tokens.json"
CLI_TOKEN_FILE = "agent.token"
PREFIX = "iat_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token."""
    return PREFIX + secrets.token_urlsafe(32)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte (atomically)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass(frozen=True)
class TokenInfo:
    """A named token as listed (never the token itself)."""

    name: str
    created_at: float


class TokenStore:
    """The named tokens of one data folder (``agent-tokens.json``)."""

    def __init__(self, home: Path) -> None:
        self.path = home / TOKENS_FILE
        self._mtime: int | None = None
        self._by_digest: dict[str, str] = {}

    def _read(self) -> dict[str, dict[str, float | str]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ConfigError(f"{self.path} is not valid JSON: {exc}") from None
        tokens = data.get("tokens", {}) if isinstance(data, dict) else {}
        return {str(k): v for k, v in tokens.items() if isinstance(v, dict)}

    def _write(self, tokens: dict[str, dict[str, float | str]]) -> None:
        write_private(self.path, json.dumps({"tokens": tokens}, indent=1, sort_keys=True))

    def create(self, name: str) -> str:
        """A new token called ``name`` (ConfigError if the name is taken or malformed)."""
        if not NAME.match(name):
            raise ConfigError("a token name is 1-64 letters, digits, '.', '_' or '-'")
        tokens = self._read()
        if name in tokens:
            raise ConfigError(f"a token named {name!r} exists already (revoke it first)")
        token = new_token()
        tokens[name] = {"sha256": digest(token), "created_at": time.time()}
        self._write(tokens)
        return token

    def revoke(self, name: str) -> None:
        """Forget the token ``name`` (NotFoundError if there is none)."""
        tokens = self._read()
        if tokens.pop(name, None) is None:
            raise NotFoundError(f"no agent token named {name!r}")
        self._write(tokens)

    def list(self) -> list[TokenInfo]:
        """The named tokens, by name."""
        return [TokenInfo(n, float(v.get("created_at", 0))) for n, v in
                sorted(self._read().items())]

    def refresh(self) -> bool:
        """Read the file again if it changed (file I/O: call it off the event loop).
        True when the set of tokens changed."""
        try:
            mtime: int | None = self.path.stat().st_mtime_ns
        except OSError:
            mtime = None
        if mtime == self._mtime:
            return False
        self._by_digest = {} if mtime is None else \
            {str(v.get("sha256")): n for n, v in self._read().items()}
        self._mtime = mtime
        return True

    def check(self, token: str) -> str | None:
        """The name of the token ``token`` is, or None (from memory: see :meth:`refresh`)."""
        offered = digest(token)
        for stored, name in self._by_digest.items():
            if hmac.compare_digest(stored, offered):
                return name
        return None
