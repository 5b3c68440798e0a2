"""Settings of one application server process."""

from __future__ import annotations

import re
from dataclasses import dataclass

from interapp.errors import ConfigError
from interapp.paths import app_dir

APP_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_app_name(name: str) -> str:
    """Validate an application name (lower-case letters, digits, ``-`` and ``_``)."""
    if not APP_NAME.match(name):
        raise ConfigError(f"invalid app name {name!r}: use lower-case letters, digits, - and _")
    return name


def default_db_url(app: str) -> str:
    """The embedded default: a SQLite file per app in the data folder."""
    return f"sqlite:///{app_dir(check_app_name(app)) / 'server.db'}"


@dataclass(frozen=True)
class ServerSettings:
    """Everything a server process needs to know; built by ``interapp serve`` or by tests."""

    app: str
    db_url: str
    issuer: str
    redis_url: str | None = None
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600
    #: how long after a rotation the same refresh token + idempotency key still gets the same
    #: pair back (a client that crashed before saving it); later, it is re-use (family revoked)
    refresh_replay_seconds: int = 300
    assertion_ttl: int = 120
    ticket_ttl: int = 30
    max_body_bytes: int = 64 * 1024
    max_message_chars: int = 8000
    login_failures_per_account: int = 5
    login_failures_per_address: int = 30
    login_window_seconds: int = 300
    stream_queue_size: int = 1000
    hash_threads: int = 2

    def __post_init__(self) -> None:
        check_app_name(self.app)
        if not self.issuer.startswith(("http://", "https://")):
            raise ConfigError("the public URL (issuer) must start with http:// or https://")
        object.__setattr__(self, "issuer", self.issuer.rstrip("/"))
