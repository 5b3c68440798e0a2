"""``AppServer``: the long-lived parts of one server process, wired together."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from interapp.server.events import EventHub
from interapp.server.groupcommit import SendQueue
from interapp.server.keys import IssuerKeys, load_app_secret, load_signing_jwk, signing_key_from
from interapp.server.passwords import Passwords
from interapp.server.ratelimit import LoginLimiter, MemoryLimiter, RedisLimiter
from interapp.server.settings import ServerSettings
from interapp.server.storage import Database

if TYPE_CHECKING:
    from joserfc.jwk import ECKey


class AppServer:
    """Database, password hasher, login limiter, event hub and keys of one application."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.db = Database.open(settings.db_url)
        self.passwords = Passwords(settings.hash_threads)
        self.hub = EventHub(app=settings.app, queue_size=settings.stream_queue_size,
                            redis_url=settings.redis_url)
        self.sends = SendQueue(self.db, self.hub)
        self.issuer_keys = IssuerKeys()
        self.limits = {"acct": settings.login_failures_per_account,
                       "addr": settings.login_failures_per_address}
        self.limiter: LoginLimiter = MemoryLimiter(self.limits, settings.login_window_seconds)
        self._signing_jwk: dict[str, Any] | None = None
        self._signing_key: ECKey | None = None  # built on first use: joserfc is ~9 MB
        self.derivation_secret = b""
        self.assertions_swept_at = float("-inf")  # last deletion of expired JWT ids (rfc7523)

    @property
    def issuer(self) -> str:
        """This application's issuer identifier (its public URL)."""
        return self.settings.issuer

    @property
    def signing_key(self) -> ECKey:
        """This application's ES256 signing key (loaded at start-up)."""
        if self._signing_key is None:
            assert self._signing_jwk is not None, "AppServer.start() was not awaited"
            self._signing_key = signing_key_from(self._signing_jwk)
        return self._signing_key

    async def start(self) -> None:
        """Load keys and connect Redis (when configured)."""
        async with self.db.begin() as conn:
            self._signing_jwk = await load_signing_jwk(conn)
            self.derivation_secret = await load_app_secret(conn, "token_derivation")
        await self.hub.start()
        if self.hub.redis is not None:
            self.limiter = RedisLimiter(self.hub.redis, f"interapp:{self.settings.app}",
                                        self.limits, self.settings.login_window_seconds)

    async def stop(self) -> None:
        """Release every resource."""
        await self.sends.close()
        await self.hub.stop()
        await self.db.close()
