"""RFC 7523 §2.1: the JWT bearer grant — the same-account-system login.

Theory of operation: the assertion is first decoded strictly (three base64url segments of
UTF-8 JSON objects; no lone surrogates, no ``NaN``/``Infinity``, no nesting deep enough to
exhaust the parser), and its unverified ``iss`` only selects which trusted key set to verify
with; nothing else is believed before the signature checks out. Then the claims must hold
(§3): ``aud`` names this application's issuer identifier (or its token endpoint); ``exp``,
``iat`` and ``jti`` are present, the times finite numbers; ``iat`` is not in the future and
``exp`` is after it by at most an hour, and not past (30 s leeway), nor further than an hour
from now; ``nbf``, when present, has passed; ``sub`` is a username of the shared account
system. Each assertion is accepted once (§3, item 7): ``(iss, jti)`` is kept in
``used_assertions`` until the assertion expires — a bounded time, so every row is swept — in the
transaction that issues the tokens, so a replayed assertion, even one racing the first, is
``invalid_grant``.

The subject maps to the account of the same username here, created on first use and then
*bound* to its issuer (``users.external_issuer``): another trusted issuer cannot sign in to it,
and no issuer signs in to this application's own (local) accounts unless the operator allowed
that issuer to (``admin trust-issuer … --may-sign-in-local-accounts``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
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
MAX_ASSERTION_CHARS = 16384
MAX_JTI_CHARS = 256
ALGORITHMS = ["ES256", "RS256", "PS256", "EdDSA", "ES384"]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _segment(part: str) -> dict[str, Any]:
    """One JOSE segment as a JSON object, decoded strictly; InvalidGrant otherwise."""
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        # "\ud800" decodes to a lone surrogate, which no database or encoder will take
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, UnicodeError, binascii.Error) as exc:
        raise InvalidGrant("the assertion is not a well-formed JWT") from exc
    if not isinstance(value, dict):
        raise InvalidGrant("the assertion is not a well-formed JWT")
    return value


def unverified_issuer(assertion: str) -> str:
    """The ``iss`` claim, read without verification, to pick the key set (after checking that
    the assertion is well-formed enough for the JOSE library to parse safely)."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise InvalidGrant("the assertion is not a JWT (three dot-separated parts)")
    _segment(parts[0])
    iss = _segment(parts[1]).get("iss")
    if not isinstance(iss, str) or not iss:
        raise InvalidGrant("the assertion has no iss claim (a string)")
    return iss.rstrip("/")


def _numeric_date(claims: dict[str, Any], name: str) -> float:
    """A NumericDate claim (RFC 7519 §2) as a finite float; InvalidGrant otherwise."""
    value = claims.get(name)
    if value is None:
        raise InvalidGrant(f"the assertion has no {name} claim")
    try:
        number = float(value) if not isinstance(value, bool | str) else math.nan
    except (TypeError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise InvalidGrant(f"the assertion's {name} claim is not a finite number")
    return number


def check_times(claims: dict[str, Any], now: float) -> float:
    """Enforce ``exp``/``iat``/``nbf`` (§3, items 4-6); return ``exp``."""
    exp, iat = _numeric_date(claims, "exp"), _numeric_date(claims, "iat")
    if exp + LEEWAY < now:
        raise InvalidGrant("the assertion has expired")
    if iat - LEEWAY > now:
        raise InvalidGrant("the assertion's iat claim is in the future")
    if not iat < exp <= iat + MAX_LIFETIME:
        raise InvalidGrant(f"the assertion's lifetime (exp - iat) must be 0-{MAX_LIFETIME} s")
    if exp > now + MAX_LIFETIME + LEEWAY:
        raise InvalidGrant(f"the assertion's exp claim is more than {MAX_LIFETIME} s away")
    if "nbf" in claims and _numeric_date(claims, "nbf") - LEEWAY > now:
        raise InvalidGrant("the assertion is not valid yet")
    return exp


def verify_assertion(assertion: str, keyset: KeySet, *, issuer: str,
                     audiences: list[str]) -> dict[str, Any]:
    """Verify signature and claims; return the claims or raise InvalidGrant."""
    from joserfc import jwt
    from joserfc.errors import JoseError

    try:
        token = jwt.decode(assertion, keyset, algorithms=ALGORITHMS)
    except JoseError as exc:
        raise InvalidGrant(f"the assertion's signature does not verify ({exc.error})") from exc
    except (ValueError, TypeError, RecursionError) as exc:  # malformed beyond the checks above
        raise InvalidGrant("the assertion could not be decoded") from exc
    claims = dict(token.claims)
    aud = claims.get("aud")
    aud_list = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(a, str) and a in audiences for a in aud_list):
        raise InvalidGrant("the assertion's audience is not this application")
    check_times(claims, time.time())
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
        raise InvalidGrant(f"the assertion needs a jti claim (a string of 1-{MAX_JTI_CHARS})")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidGrant("the assertion has no subject")
    if str(claims.get("iss", "")).rstrip("/") != issuer:
        raise InvalidGrant("the assertion's issuer changed during verification")
    return claims


async def jwt_bearer_grant(srv: AppServer, req: TokenRequest) -> dict[str, Any]:
    """Exchange an assertion from a trusted issuer for this app's tokens."""
    assertion = req.require("assertion")
    if len(assertion) > MAX_ASSERTION_CHARS:
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
    except ConfigError as exc:
        raise InvalidGrant("the assertion's subject is not a valid username") from exc
    await _forget_expired(srv)
    async with srv.db.begin() as conn:
        trust = await accounts.issuer_trust(conn, issuer)  # read again: it may be gone
        if trust is None:
            raise InvalidGrant("the assertion's issuer is not trusted by this application")
        await _spend(conn, issuer, claims)
        user = await _subject(conn, trust, username, claims)
        return await issue.issue_pair(conn, user_id=user.id, client_id=req.client_id,
                                      grant_type=JWT_BEARER,
                                      access_ttl=srv.settings.access_token_ttl,
                                      refresh_ttl=srv.settings.refresh_token_ttl)


async def _subject(conn: AsyncConnection, trust: accounts.IssuerTrust, username: str,
                   claims: dict[str, Any]) -> accounts.User:
    """The account the assertion signs in to, created (bound to its issuer) on first use."""
    user, bound_to = await accounts.find_subject(conn, username)
    if user is None:
        name = claims.get("name")
        try:
            return await accounts.create_user(
                conn, username, display_name=name if isinstance(name, str) else None,
                external_issuer=trust.issuer)
        except ConfigError:  # a concurrent first login created it: check that account
            user, bound_to = await accounts.find_subject(conn, username)
            if user is None:
                raise
    if bound_to == trust.issuer:
        return user
    if bound_to is None and trust.may_sign_in_local_accounts:
        return user
    raise InvalidGrant(f"the account {username!r} here is not one of this issuer's: "
                       + ("it is a local account" if bound_to is None
                          else "another issuer's login created it"))


async def _spend(conn: AsyncConnection, issuer: str, claims: dict[str, Any]) -> None:
    """Record the assertion's ``jti``; InvalidGrant when it was presented before."""
    try:
        async with conn.begin_nested():
            await conn.execute(used_assertions.insert().values(
                issuer=issuer, jti=claims["jti"], expires_at=float(claims["exp"]) + LEEWAY))
    except IntegrityError as exc:
        raise InvalidGrant("the assertion was already used (its jti was seen before)") from exc


SWEEP_SECONDS = 60.0
#: No accepted assertion's row expires later than this from now (``check_times``).
REACH = MAX_LIFETIME + 2 * LEEWAY


async def _forget_expired(srv: AppServer) -> None:
    """Delete expired ``used_assertions`` rows, at most once a minute per process, in a short
    transaction of its own (inside the grant's, concurrent grants queued on the same rows).

    Rows out of any accepted assertion's reach (left by versions that took an ``exp`` of
    ``Infinity``) go too: their assertions are refused by their claims now."""
    now = time.monotonic()
    if now - srv.assertions_swept_at < SWEEP_SECONDS:
        return
    srv.assertions_swept_at = now
    wall = time.time()
    async with srv.db.begin() as conn:
        await conn.execute(used_assertions.delete().where(
            (used_assertions.c.expires_at < wall)
            | (used_assertions.c.expires_at > wall + REACH)))
