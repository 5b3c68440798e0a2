"""Signing keys (this app as an issuer) and trusted issuers' key sets (this app as an audience).

Theory of operation: each application owns one ES256 key pair, created on first use and kept in
its database (``app_secrets``; with several processes the first to create it wins); its public
half is served at ``/.well-known/jwks.json`` and signs the assertions minted by the RFC 8693
exchange. An app that *trusts* another issuer (``admin trust-issuer``)
stores that issuer's JWKS (or a URL to fetch it from, cached for a few minutes) and accepts
RFC 7523 assertions signed with it: that is what "the same account system" means here.

Fetching a key set is guarded, because the URL is reached on behalf of unauthenticated
requests (any assertion naming a trusted issuer): https only (plain http from a loopback address
only), no redirects, at most ``MAX_JWKS_BYTES``, one fetch at a time per issuer, and a failed
fetch is remembered for ``REFETCH_SECONDS`` (negative cache), so junk assertions cannot make this
server download anything more than once per that period.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.errors import ConfigError, InvalidGrant
from interapp.server.storage.schema import app_secrets, trusted_issuers

if TYPE_CHECKING:  # joserfc (and cryptography under it) is imported on first use: ~9 MB
    import httpx
    from joserfc.jwk import ECKey, KeySet

    from interapp.server.storage.db import Database

JWKS_CACHE_SECONDS = 300.0
REFETCH_SECONDS = 30.0  # a key set is refetched after a failure at most this often
MAX_JWKS_BYTES = 64 * 1024  # a JWKS of a few keys is ~1 KB
FETCH_TIMEOUT = 5.0


async def _load_or_create(conn: AsyncConnection, name: str, make: Callable[[], str]) -> str:
    """The ``app_secrets`` value ``name``; the first process to create it wins any race."""
    query = sa.select(app_secrets.c.value).where(app_secrets.c.name == name)
    row = (await conn.execute(query)).first()
    if row is not None:
        return str(row[0])
    try:
        async with conn.begin_nested():
            await conn.execute(app_secrets.insert().values(name=name, value=make(),
                                                           created_at=time.time()))
    except IntegrityError:
        pass  # another server process created it first: use theirs
    return str((await conn.execute(query)).scalar_one())


async def load_signing_jwk(conn: AsyncConnection) -> dict[str, Any]:
    """This app's ES256 signing key as a private JWK, created on first use."""
    def make() -> str:
        from joserfc.jwk import ECKey

        key = ECKey.generate_key("P-256", private=True, auto_kid=True)
        return json.dumps(key.as_dict(private=True))

    jwk: dict[str, Any] = json.loads(await _load_or_create(conn, "signing_jwk", make))
    return jwk


async def load_signing_key(conn: AsyncConnection) -> ECKey:
    """This app's ES256 signing key, created on first use."""
    return signing_key_from(await load_signing_jwk(conn))


def signing_key_from(jwk: dict[str, Any]) -> ECKey:
    """The key of a private JWK made by :func:`load_signing_jwk`."""
    from joserfc.jwk import ECKey

    return ECKey.import_key(jwk)


async def load_app_secret(conn: AsyncConnection, name: str) -> bytes:
    """A random 32-byte secret of this application, created on first use (HMAC key)."""
    value = await _load_or_create(conn, name, lambda: base64.b64encode(os.urandom(32)).decode())
    return base64.b64decode(value)


def public_jwks(key: ECKey) -> dict[str, Any]:
    """The JWKS document published for ``key``."""
    public = key.as_dict(private=False)
    public.update({"use": "sig", "alg": "ES256"})
    return {"keys": [public]}


def parse_jwks(text: str) -> KeySet:
    """Parse a JWKS document (``{"keys": [...]}``) or a single JWK; raise ConfigError if invalid."""
    try:
        data = json.loads(text)
        if isinstance(data, dict) and "keys" not in data:
            data = {"keys": [data]}
        from joserfc.jwk import KeySet

        keyset = KeySet.import_key_set(data)
    except Exception as exc:  # joserfc raises several types for malformed keys
        raise ConfigError(f"not a valid JWKS document: {exc}") from exc
    if any(k.is_private for k in keyset.keys):
        raise ConfigError("the JWKS contains a private key: give the public keys only")
    return keyset


def well_known_jwks(issuer: str) -> str:
    """Where an issuer's keys are fetched from when no JWKS (URL) was given."""
    return f"{issuer.rstrip('/')}/.well-known/jwks.json"


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and the loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_fetch_url(url: str, what: str) -> str:
    """``url`` if keys may be fetched from it (https, or http on loopback); else ConfigError."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and is_loopback_host(parts.hostname):
        return url
    raise ConfigError(f"{what} must be an https URL (plain http only on a loopback address): "
                      f"keys fetched over http could be replaced on the way")


class IssuerKeys:
    """Looks up (and caches) the key set of a trusted issuer."""

    def __init__(self, http: httpx.AsyncClient | None = None) -> None:
        self._http = http
        self._cache: dict[str, tuple[float, KeySet]] = {}
        self._failed: dict[str, float] = {}  # issuer -> when its last fetch failed
        self._fetching: dict[str, asyncio.Future[KeySet]] = {}  # loads under way
        self.fetches = 0  # outbound fetches made (observability and tests)

    async def keyset(self, db: Database, issuer: str) -> KeySet:
        """The key set trusted for ``issuer``; InvalidGrant when the issuer is not trusted.

        The trust entry is read in a short transaction of its own; a JWKS URL is fetched
        outside any transaction (a slow issuer must not hold a database connection), by one
        request at a time per issuer (the others wait for its answer).
        """
        cached = self._cache.get(issuer)
        if cached and time.monotonic() - cached[0] < JWKS_CACHE_SECONDS:
            return cached[1]
        failed = self._failed.get(issuer)
        if failed is not None and time.monotonic() - failed < REFETCH_SECONDS:
            raise InvalidGrant("the trusted issuer's keys could not be fetched (recently)")
        task = self._fetching.get(issuer)
        if task is None:  # the first asker starts the one load; later askers share it
            task = asyncio.ensure_future(self._load(db, issuer))
            self._fetching[issuer] = task
            task.add_done_callback(lambda done: self._loaded(issuer, done))
        return await asyncio.shield(task)  # an asker that goes away leaves the load running

    def _loaded(self, issuer: str, task: asyncio.Future[KeySet]) -> None:
        if self._fetching.get(issuer) is task:
            del self._fetching[issuer]
        if not task.cancelled():
            task.exception()  # retrieved, also when no asker waits any more

    async def _load(self, db: Database, issuer: str) -> KeySet:
        async with db.begin() as conn:
            row = (await conn.execute(
                sa.select(trusted_issuers.c.jwks, trusted_issuers.c.jwks_url)
                .where(trusted_issuers.c.issuer == issuer))).first()
        if row is None:
            raise InvalidGrant("the assertion's issuer is not trusted by this application")
        jwks, url = row
        if jwks:
            keyset = parse_jwks(jwks)
        else:
            try:
                keyset = await self._fetch(url or well_known_jwks(issuer))
            except InvalidGrant:
                self._failed[issuer] = time.monotonic()
                raise
        self._failed.pop(issuer, None)
        self._cache[issuer] = (time.monotonic(), keyset)
        return keyset

    def forget(self, issuer: str) -> None:
        """Drop a cached key set (after a failed verification, keys may have rotated) — unless
        it was fetched less than ``REFETCH_SECONDS`` ago: junk assertions naming a trusted
        issuer must not make this server download its keys on every request."""
        cached = self._cache.get(issuer)
        if cached and time.monotonic() - cached[0] >= REFETCH_SECONDS:
            del self._cache[issuer]

    async def _fetch(self, url: str) -> KeySet:
        import httpx  # only for issuers that publish a JWKS URL: keeps idle servers smaller

        try:
            check_fetch_url(url, "the JWKS URL")
        except ConfigError as exc:
            raise InvalidGrant(f"the trusted issuer's keys are not fetched: {exc}") from exc
        self.fetches += 1
        client = self._http or httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False)
        try:
            async with client.stream("GET", url) as resp:
                resp.raise_for_status()
                declared = resp.headers.get("content-length", "")
                if declared.isascii() and declared.isdigit() and int(declared) > MAX_JWKS_BYTES:
                    raise ConfigError(f"the JWKS is over {MAX_JWKS_BYTES} bytes")
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise ConfigError(f"the JWKS is over {MAX_JWKS_BYTES} bytes")
            return parse_jwks(body.decode("utf-8"))
        except (httpx.HTTPError, ConfigError, UnicodeDecodeError) as exc:
            raise InvalidGrant("the trusted issuer's keys could not be fetched") from exc
        finally:
            if self._http is None:
                await client.aclose()
