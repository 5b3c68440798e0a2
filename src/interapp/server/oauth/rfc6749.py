"""RFC 6749: the token endpoint, client authentication, password and refresh-token grants.

Theory of operation: ``POST /oauth/token`` parses the form body strictly (§3.2: no repeated
parameters), authenticates the client by HTTP Basic or ``client_secret_post`` (§2.3.1, never
both), then dispatches on ``grant_type`` to one handler per grant. Every failure is an
:class:`~interapp.errors.OAuthError` rendered as the §5.2 JSON body with its status; successes
carry ``Cache-Control: no-store`` (§5.1).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse

from interapp.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    OAuthError,
    SlowDown,
    UnsupportedGrantType,
)
from interapp.ids import ClientId
from interapp.secret import Secret
from interapp.server import accounts
from interapp.server.core import AppServer
from interapp.server.oauth import issue
from interapp.server.observability import LOGINS, REFRESHES

PASSWORD = "password"
REFRESH_TOKEN = "refresh_token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class TokenRequest:
    """A parsed, client-authenticated token-endpoint request."""

    client_id: ClientId
    params: dict[str, str]
    address: str

    def require(self, name: str) -> str:
        """A mandatory parameter; InvalidRequest when missing or empty."""
        value = self.params.get(name)
        if not value:
            raise InvalidRequest(f"missing parameter: {name}")
        return value


async def read_form(request: Request) -> dict[str, str]:
    """Parse an ``application/x-www-form-urlencoded`` body with no repeated parameters."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != FORM:
        raise InvalidRequest(f"the body must be {FORM}")
    try:
        pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True,
                          strict_parsing=False, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("the form body could not be parsed") from exc
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise InvalidRequest(f"parameter {key[:64]} is repeated")
        if "\x00" in key or "\x00" in value:
            raise InvalidRequest(f"parameter {key[:64]!r} contains a NUL character")
        params[key] = value
    return params


def client_credentials(request: Request, params: dict[str, str]) -> tuple[str, Secret | None]:
    """Client id and secret from HTTP Basic or the body (``client_secret_post``)."""
    header = request.headers.get("authorization", "")
    body_id = params.pop("client_id", None)
    body_secret = params.pop("client_secret", None)
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise InvalidClient("client authentication must use HTTP Basic")
        if body_secret is not None:
            raise InvalidRequest("use one client authentication method, not two")
        try:
            raw = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, ValueError) as exc:  # also non-ASCII input, bad UTF-8
            raise InvalidClient("malformed HTTP Basic credentials") from exc
        cid, sep, secret = raw.partition(":")
        if not sep:
            raise InvalidClient("malformed HTTP Basic credentials")
        cid, secret = unquote(cid), unquote(secret)
        if "\x00" in cid or "\x00" in secret:
            raise InvalidClient("malformed HTTP Basic credentials")
        if body_id is not None and body_id != cid:
            raise InvalidRequest("client_id in the body does not match the credentials")
        return cid, Secret(secret)
    if not body_id:
        raise InvalidClient("client authentication required")
    return body_id, Secret(body_secret) if body_secret is not None else None


async def authenticate(srv: AppServer, request: Request, params: dict[str, str]) -> ClientId:
    """Authenticate the calling client (used by the token, revocation and introspection ends)."""
    cid, secret = client_credentials(request, params)
    async with srv.db.begin() as conn:
        return await accounts.authenticate_client(conn, cid, secret)


def client_address(request: Request) -> str:
    """The peer address used for per-address limits."""
    return request.client.host if request.client else "unknown"


async def password_grant(srv: AppServer, req: TokenRequest) -> dict[str, Any]:
    """§4.3: the user's own account information for this application."""
    username = req.require("username")
    password = Secret(req.require("password"))
    keys = [f"acct:{username.lower()[:64]}", f"addr:{req.address}"]
    wait = await srv.limiter.retry_after(keys)
    if wait is not None:
        raise SlowDown("too many failed logins; try again later", retry_after=wait)
    async with srv.db.begin() as conn:
        user, stored = await accounts.password_hash_of(conn, username)
    if not await srv.passwords.verify(stored, password) or user is None:
        await srv.limiter.failed(keys)
        raise InvalidGrant("invalid username or password")
    await srv.limiter.succeeded(keys[0])
    async with srv.db.begin() as conn:
        return await issue.issue_pair(conn, user_id=user.id, client_id=req.client_id,
                                      grant_type=PASSWORD,
                                      access_ttl=srv.settings.access_token_ttl,
                                      refresh_ttl=srv.settings.refresh_token_ttl)


async def refresh_grant(srv: AppServer, req: TokenRequest) -> dict[str, Any]:
    """§6 with rotation: a new pair per use; re-use revokes the family (Security BCP)."""
    token = req.require("refresh_token")
    try:
        async with srv.db.begin() as conn:
            _user, body = await issue.rotate_refresh(
                conn, token, req.client_id, access_ttl=srv.settings.access_token_ttl,
                refresh_ttl=srv.settings.refresh_token_ttl,
                idempotency_key=req.params.get("idempotency_key") or None,
                derivation_secret=srv.derivation_secret)
    except issue.ReusedRefreshToken as reused:
        async with srv.db.begin() as conn:
            await issue.revoke_family(conn, reused.family_id)
        raise
    return body


Grant = Callable[[AppServer, TokenRequest], Awaitable[dict[str, Any]]]


def grants() -> dict[str, Grant]:
    """grant_type → handler."""
    from interapp.server.oauth import rfc7523, rfc8693

    return {PASSWORD: password_grant, REFRESH_TOKEN: refresh_grant,
            JWT_BEARER: rfc7523.jwt_bearer_grant, TOKEN_EXCHANGE: rfc8693.token_exchange_grant}


def oauth_error_response(exc: OAuthError) -> JSONResponse:
    """Render an OAuthError as RFC 6749 §5.2."""
    headers = dict(NO_STORE)
    if isinstance(exc, InvalidClient):
        headers["WWW-Authenticate"] = 'Basic realm="interapp"'
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
    return JSONResponse(exc.to_wire(), status_code=exc.status, headers=headers)


async def token_endpoint(request: Request) -> JSONResponse:
    """``POST /oauth/token``."""
    srv: AppServer = request.app.state.server
    handlers = grants()
    grant_type = ""
    try:
        params = await read_form(request)
        grant_type = params.pop("grant_type", "")
        if not grant_type:
            raise InvalidRequest("missing parameter: grant_type")
        client_id = await authenticate(srv, request, params)
        handler = handlers.get(grant_type)
        if handler is None:
            raise UnsupportedGrantType(f"grant type {grant_type[:100]!r} is not supported")
        body = await handler(srv, TokenRequest(client_id, params, client_address(request)))
    except OAuthError as exc:
        _count(grant_type, exc.code)
        return oauth_error_response(exc)
    _count(grant_type, "ok")
    return JSONResponse(body, headers=NO_STORE)


def _count(grant_type: str, outcome: str) -> None:
    grant = {PASSWORD: "password", REFRESH_TOKEN: "refresh_token", JWT_BEARER: "jwt_bearer",
             TOKEN_EXCHANGE: "token_exchange"}.get(grant_type, "other")
    LOGINS.labels(grant, outcome).inc()
    if grant == "refresh_token":
        REFRESHES.labels(outcome).inc()
