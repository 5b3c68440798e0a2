"""RFC 7523 §2.1: the JWT bearer grant — the same-account-system login.

Theory of operation: the assertion's (unverified) ``iss`` only selects which trusted key set to
verify with; nothing else is believed before the signature checks out. Then the claims must hold:
``aud`` names this application's issuer identifier (or its token endpoint), ``exp`` is in the
future, ``nbf``/``iat`` are not in the future (30 s leeway), and ``sub`` is a username of the shared
account system. The subject maps to the account of the same username here, created on first use.
An assertion with a ``jti`` is accepted once (§3, item 7): ``(iss, jti)`` is kept in
``used_assertions`` until the assertion expires, in the transaction that issues the tokens, so a
replayed assertion — even one racing the first — is ``invalid_grant``.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.errors import ConfigError, InvalidGrant, InvalidRequest
from interapp.server import accounts
from interapp.server.core import AppServer
from interapp.server.oauth import issue
from interapp.server.oauth.base import JWT_BEARER, TokenRequest
from interapp.server.storage.schema import used_assertions

if TYPE_CHECKING:  # joserfc is imported by the first JWT grant (it and cryptography: ~9 MB)
    from joserfc.jwk import KeySet

LEEWAY = 30
MAX_LIFETIME = 3600
ALGORITHMS = ["ES256", "RS256", "PS256", "EdDSA", "ES384"]


def unverified_issuer(assertion: str) -> str:
    """The ``iss`` claim, read without verification, to pick the key set."""
    try:
        payload = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        iss = claims["iss"]
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        raise InvalidGrant("the assertion is not a JWT with an iss claim") from exc
    if not isinstance(iss, str):
        raise InvalidGrant("the assertion's iss claim is not a string")
    return iss.rstrip("/")


def verify_assertion(assertion: str, keyset: KeySet, *, issuer: str,
                     audiences: list[str]) -> dict[str, Any]:
    """Verify signature and claims; return the claims or raise InvalidGrant."""
    from joserfc import jwt
    from joserfc.errors import JoseError

    try:
        token = jwt.decode(assertion, keyset, algorithms=ALGORITHMS)
    except JoseError as exc:
        raise InvalidGrant(f"the assertion's signature does not verify ({exc.error})") from exc
    claims = dict(token.claims)
    now = time.time()
    aud = claims.get("aud")
    aud_list = aud if isinstance(aud, list) else [aud]
    if not any(a in audiences for a in aud_list):
        raise InvalidGrant("the assertion's audience is not this application")
    exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    if not isinstance(exp, int | float) or exp + LEEWAY < now:
        raise InvalidGrant("the assertion has expired or has no exp claim")
    if isinstance(nbf, int | float) and nbf - LEEWAY > now:
        raise InvalidGrant("the assertion is not valid yet")
    if isinstance(iat, int | float) and (iat - LEEWAY > now or exp - iat > MAX_LIFETIME):
        raise InvalidGrant("the assertion's iat claim is unacceptable")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidGrant("the assertion has no subject")
    if str(claims.get("iss", "")).rstrip("/") != issuer:
        raise InvalidGrant("the assertion's issuer changed during verification")
    return claims


async def jwt_bearer_grant(srv: AppServer, req: TokenRequest) -> dict[str, Any]:
    """Exchange an assertion from a trusted issuer for this app's tokens."""
    assertion = req.require("assertion")
    if len(assertion) > 16384:
        raise InvalidRequest("the assertion is too large")
    issuer = unverified_issuer(assertion)
    audiences = [srv.issuer, f"{srv.issuer}/oauth/token"]
    keyset = await srv.issuer_keys.keyset(srv.db, issuer)
    try:
        claims = verify_assertion(assertion, keyset, issuer=issuer, audiences=audiences)
    except InvalidGrant:
        srv.issuer_keys.forget(issuer)  # the issuer may have rotated keys; refetch next time
        raise
    username = str(claims["sub"])
    try:
        accounts.check_username(username)
    except Exception as exc:
        raise InvalidGrant("the assertion's subject is not a valid username") from exc
    await _forget_expired(srv)
    async with srv.db.begin() as conn:
        await _spend(conn, issuer, claims)
        user = await accounts.find_user(conn, username)
        if user is None:
            name = claims.get("name")
            try:
                user = await accounts.create_user(
                    conn, username, display_name=name if isinstance(name, str) else None,
                    external_issuer=issuer)
            except ConfigError:  # a concurrent first login created it: use that account
                user = await accounts.find_user(conn, username)
                if user is None:
                    raise
        return await issue.issue_pair(conn, user_id=user.id, client_id=req.client_id,
                                      grant_type=JWT_BEARER,
                                      access_ttl=srv.settings.access_token_ttl,
                                      refresh_ttl=srv.settings.refresh_token_ttl)


async def _spend(conn: AsyncConnection, issuer: str, claims: dict[str, Any]) -> None:
    """Record the assertion's ``jti``; InvalidGrant when it was presented before."""
    jti = claims.get("jti")
    if jti is None:
        return
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise InvalidGrant("the assertion's jti claim is not valid")
    try:
        async with conn.begin_nested():
            await conn.execute(used_assertions.insert().values(
                issuer=issuer, jti=jti, expires_at=float(claims["exp"]) + LEEWAY))
    except IntegrityError as exc:
        raise InvalidGrant("the assertion was already used (its jti was seen before)") from exc


SWEEP_SECONDS = 60.0


async def _forget_expired(srv: AppServer) -> None:
    """Delete expired ``used_assertions`` rows, at most once a minute per process, in a short
    transaction of its own (inside the grant's, concurrent grants queued on the same rows)."""
    now = time.monotonic()
    if now - srv.assertions_swept_at < SWEEP_SECONDS:
        return
    srv.assertions_swept_at = now
    async with srv.db.begin() as conn:
        await conn.execute(used_assertions.delete().where(
            used_assertions.c.expires_at < time.time()))
