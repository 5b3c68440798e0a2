"""RFC 8693: token exchange — this application acting as the issuer of a shared account system.

A logged-in user's access token (``subject_token``, type ``…:access_token``) is exchanged for a
short-lived ES256 JWT (``requested_token_type`` ``…:jwt``) whose audience is another
application's issuer identifier. That application, when it trusts this issuer, accepts the JWT
in an RFC 7523 grant; the user is never asked for a password there.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from interapp.errors import InvalidGrant, InvalidRequest, InvalidTarget
from interapp.server import accounts
from interapp.server.core import AppServer
from interapp.server.oauth import issue
from interapp.server.oauth.base import TokenRequest

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"


async def mint_assertion(srv: AppServer, *, username: str, display_name: str,
                         audience: str) -> str:
    """Sign an assertion about ``username`` for ``audience``."""
    from joserfc import jwt  # on first use: it and cryptography weigh ~9 MB

    now = int(time.time())
    claims = {"iss": srv.issuer, "sub": username, "aud": audience, "iat": now, "nbf": now,
              "exp": now + srv.settings.assertion_ttl, "jti": secrets.token_urlsafe(16),
              "preferred_username": username, "name": display_name}
    key = await srv.signing_key()
    header = {"alg": "ES256", "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, claims, key)


async def token_exchange_grant(srv: AppServer, req: TokenRequest) -> dict[str, Any]:
    """Exchange this app's access token for an assertion addressed to another app."""
    subject_token = req.require("subject_token")
    if req.require("subject_token_type") != ACCESS_TOKEN_TYPE:
        raise InvalidRequest(f"subject_token_type must be {ACCESS_TOKEN_TYPE}")
    requested = req.params.get("requested_token_type") or JWT_TOKEN_TYPE
    if requested != JWT_TOKEN_TYPE:
        raise InvalidRequest(f"requested_token_type must be {JWT_TOKEN_TYPE}")
    if "actor_token" in req.params:
        raise InvalidRequest("delegation (actor_token) is not supported")
    audience = req.params.get("audience") or req.params.get("resource")
    if not audience:
        raise InvalidTarget("missing parameter: audience (the other application's issuer)")
    if not audience.startswith(("http://", "https://")) or len(audience) > 512:
        raise InvalidTarget("audience must be an application's issuer URL")
    audience = audience.rstrip("/")
    if audience == srv.issuer:
        raise InvalidTarget("the audience must be another application")
    async with srv.db.begin() as conn:
        info = await issue.lookup(conn, subject_token, issue.ACCESS)
        if info is None:
            raise InvalidGrant("the subject token is not a valid access token of this application")
        if info.client_id != req.client_id:
            raise InvalidGrant("the subject token was issued to another client")
        user = await accounts.get_user(conn, info.user_id)
    if user is None:
        raise InvalidGrant("the subject token's account no longer exists")
    # outside the transaction: the signing key may need one of its own (on first use)
    assertion = await mint_assertion(srv, username=user.username,
                                     display_name=user.display_name, audience=audience)
    return {"access_token": assertion, "issued_token_type": JWT_TOKEN_TYPE,
            "token_type": "N_A", "expires_in": srv.settings.assertion_ttl}
