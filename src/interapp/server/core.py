"""``AppServer``: the long-lived parts of one server process, wired together."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interapp.server.events import EventHub
from interapp.server.groupcommit import SendQueue
from interapp.server.invites import ExpirySweep
from interapp.server.keys import (
    IssuerKeys,
    load_app_secret,
    load_rsa_signing_jwk,
    load_signing_jwk,
    rsa_signing_key_from,
    signing_key_from,
)
from interapp.server.memory import return_large_blocks
from interapp.server.passwords import Passwords
from interapp.server.ratelimit import LoginLimiter, MemoryLimiter, RedisLimiter
from interapp.server.revocations import RevocationWatch
from interapp.server.settings import ServerSettings
from interapp.server.storage import Database

if TYPE_CHECKING:
    from joserfc.jwk import ECKey, RSAKey


class AppServer:
    """Database, password hasher, login limiter, event hub and keys of one application."""

    def __init__(self, settings: ServerSettings) -> None:
        return_large_blocks()  # the hashing threads' 19 MiB blocks leave when freed
        self.settings = settings
        self.db = Database.open(settings.db_url)
        self.passwords = Passwords(settings.hash_threads)
        self.hub = EventHub(app=settings.app, queue_size=settings.stream_queue_size,
                            redis_url=settings.redis_url)
        self.sends = SendQueue(self.db, self.hub)
        self.revocations = RevocationWatch(self.db, self.hub)  # closes revoked streams
        self.invite_expiry = ExpirySweep(self.db, self.hub)  # tells senders of expired invites
        self.issuer_keys = IssuerKeys()
        self.limits = {"acct": settings.login_failures_per_account,
                       "addr": settings.login_failures_per_address}
        self.limiter: LoginLimiter = MemoryLimiter(self.limits, settings.login_window_seconds)
        self._signing_key: ECKey | None = None  # see signing_key()
        self._rsa_signing_key: RSAKey | None = None  # see rsa_signing_key()
        self.derivation_secret = b""
        self.assertions_swept_at = float("-inf")  # last deletion of expired JWT ids (rfc7523)

    @property
    def issuer(self) -> str:
        """This application's issuer identifier (its public URL)."""
        return self.settings.issuer

    async def signing_key(self) -> ECKey:
        """This application's ES256 signing key, created on first use.

        Neither made nor parsed before something needs it (the JWKS document, an RFC 8693
        exchange): joserfc and cryptography weigh ~9 MB that a server which never signs keeps.
        """
        if self._signing_key is None:
            async with self.db.begin() as conn:  # several processes: the first to create wins
                jwk = await load_signing_jwk(conn)
            self._signing_key = signing_key_from(jwk)
        return self._signing_key

    async def rsa_signing_key(self) -> RSAKey:
        """The RS256 key for ID tokens of clients that ask for RS256, created on first use."""
        if self._rsa_signing_key is None:
            async with self.db.begin() as conn:
                jwk = await load_rsa_signing_jwk(conn)
            self._rsa_signing_key = rsa_signing_key_from(jwk)
        return self._rsa_signing_key

    async def start(self) -> None:
        """Load the token-derivation secret and connect Redis (when configured)."""
        async with self.db.begin() as conn:
            self.derivation_secret = await load_app_secret(conn, "token_derivation")
        await self.hub.start()
        await self.revocations.start()
        await self.invite_expiry.start()
        if self.hub.redis is not None:
            self.limiter = RedisLimiter(self.hub.redis, f"interapp:{self.settings.app}",
                                        self.limits, self.settings.login_window_seconds)

    async def stop(self) -> None:
        """Release every resource."""
        await self.sends.close()
        await self.revocations.stop()
        await self.invite_expiry.stop()
        await self.hub.stop()
        await self.db.close()
