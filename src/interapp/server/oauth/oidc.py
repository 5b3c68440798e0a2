"""OpenID Connect Core 1.0 on top of the code and device grants: ID tokens, UserInfo, discovery.

Theory of operation: a login through the authorization code or device grant whose scope holds
``openid`` gets an ``id_token`` next to its access and refresh tokens: a JWT signed with the
app's key (ES256, the key of ``/.well-known/jwks.json``; RS256 for a client registered with
``--id-token-alg RS256``) with ``iss``, ``sub`` (the account's stable id), ``aud`` (the client),
``exp``, ``iat``, ``auth_time``, the ``nonce`` of the authorization request (echoed as sent),
``at_hash`` and, with ``profile``, ``preferred_username`` and ``name``. ``GET``/``POST
/oauth/userinfo`` answers the same claims for an access token carrying ``openid``.
``/.well-known/openid-configuration`` is the RFC 8414 document plus the OIDC fields.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import JSONResponse

from interapp.errors import InsufficientScope, InvalidToken, OAuthError
from interapp.ids import FamilyId
from interapp.server import accounts
from interapp.server.accounts import ClientInfo, User
from interapp.server.core import AppServer
from interapp.server.oauth import issue
from interapp.server.oauth.base import NO_STORE
from interapp.server.storage.schema import token_families
from interapp.server.tokens import new_id

OPENID = "openid"
PROFILE = "profile"
#: The scope of the ``/v1`` API (an empty scope means it too, as for every older token).
API_SCOPE = accounts.API_SCOPE
SCOPES = (OPENID, PROFILE, API_SCOPE)
ID_TOKEN_TTL = 300
CLAIMS = ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash",
          "preferred_username", "name"]


def discovery(issuer: str, oauth_metadata: dict[str, Any]) -> dict[str, Any]:
    """``/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0 §3)."""
    return {**oauth_metadata,
            "userinfo_endpoint": f"{issuer}/oauth/userinfo",
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": list(accounts.ID_TOKEN_ALGS),
            "claims_supported": CLAIMS,
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False}


def _at_hash(access_token: str) -> str:
    """OIDC Core §3.1.3.6: the left half of SHA-256 of the access token, base64url."""
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def user_claims(user: User, scope: str) -> dict[str, Any]:
    """The claims about ``user`` that ``scope`` releases (``sub`` always)."""
    claims: dict[str, Any] = {"sub": user.id}
    if PROFILE in scope.split():
        claims.update(preferred_username=user.username, name=user.display_name)
    return claims


async def preload_keys(srv: AppServer) -> None:
    """Load (or make) the signing keys before a grant opens its transaction: making one needs
    a transaction of its own, which must not wait for the grant's (SQLite has one writer)."""
    await srv.signing_key()
    await srv.rsa_signing_key()


async def id_token(srv: AppServer, client: ClientInfo, user: User, *, scope: str,
                   access_token: str, nonce: str | None, auth_time: float | None) -> str:
    """A signed ID token for ``user`` and ``client`` (keys loaded by :func:`preload_keys`)."""
    from joserfc import jwt  # with cryptography ~9 MB: imported by the first OIDC login

    now = int(time.time())
    claims = {"iss": srv.issuer, "aud": client.client_id, "iat": now, "exp": now + ID_TOKEN_TTL,
              "auth_time": int(auth_time if auth_time is not None else now),
              "at_hash": _at_hash(access_token), **user_claims(user, scope)}
    if nonce is not None:
        claims["nonce"] = nonce
    if client.id_token_alg == "RS256":
        rsa = await srv.rsa_signing_key()
        return jwt.encode({"alg": "RS256", "kid": rsa.kid, "typ": "JWT"}, claims, rsa)
    key = await srv.signing_key()
    return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "JWT"}, claims, key)


async def issue_login(srv: AppServer, conn: AsyncConnection, *, client: ClientInfo, user: User,
                      scope: str, grant_type: str, nonce: str | None = None,
                      auth_time: float | None = None) -> tuple[dict[str, Any], FamilyId]:
    """A new login (token family) for a browser or device grant: the §5.1 body (with an
    ``id_token`` when ``scope`` has ``openid``) and the family, so a replay can revoke it."""
    family_id = FamilyId(new_id())
    await conn.execute(token_families.insert().values(
        id=family_id, user_id=user.id, client_id=client.client_id, grant_type=grant_type,
        created_at=time.time()))
    body = await issue.issue_pair(conn, user_id=user.id, client_id=client.client_id,
                                  grant_type=grant_type, family_id=family_id, scope=scope,
                                  access_ttl=srv.settings.access_token_ttl,
                                  refresh_ttl=srv.settings.refresh_token_ttl)
    if OPENID in scope.split():
        body["id_token"] = await id_token(srv, client, user, scope=scope,
                                          access_token=body["access_token"], nonce=nonce,
                                          auth_time=auth_time)
    return body, family_id


def _bearer_error(exc: OAuthError) -> JSONResponse:
    """RFC 6750 §3: the error in ``WWW-Authenticate`` and in the body."""
    # RFC 6750 §3: the header's error_description is printable ASCII without '"' or '\\'
    description = "".join(c for c in exc.message if " " <= c <= "~" and c not in '"\\')
    return JSONResponse(exc.to_wire(), status_code=exc.status, headers={
        **NO_STORE, "WWW-Authenticate": f'Bearer realm="interapp", error="{exc.code}", '
                                        f'error_description="{description}"'})


async def userinfo_endpoint(request: Request) -> JSONResponse:
    """``GET``/``POST /oauth/userinfo`` (OIDC Core §5.3) with a Bearer access token."""
    srv: AppServer = request.app.state.server
    try:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("send the access token as Authorization: Bearer <token>")
        async with srv.db.begin() as conn:
            info = await issue.lookup(conn, token.strip(), issue.ACCESS)
            user = await accounts.get_user(conn, info.user_id) if info else None
        if info is None or user is None:
            raise InvalidToken("the access token is invalid, expired or revoked")
        if OPENID not in info.scope.split():
            raise InsufficientScope("the access token was not granted the openid scope")
    except OAuthError as exc:
        return _bearer_error(exc)
    return JSONResponse(user_claims(user, info.scope), headers=NO_STORE)
