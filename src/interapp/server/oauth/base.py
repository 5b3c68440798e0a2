"""What every OAuth endpoint and grant shares: grant-type URNs, the parsed token request, strict
form parsing, client authentication and the RFC 6749 §5.2 error response.

Theory of operation: the grant modules (``rfc6749``, ``rfc7523``, ``rfc8693``, and any new one)
import only this module and the storage/domain layers, never each other; the one table that
names them all is :mod:`interapp.server.oauth.grants`. A new grant is a module with a handler
``async (AppServer, TokenRequest) -> dict`` plus one row in that table.
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
    UnavailableError,
)
from interapp.ids import ClientId
from interapp.secret import Secret
from interapp.server import accounts
from interapp.server.accounts import User
from interapp.server.core import AppServer

# Grant types (RFC 6749 §4, RFC 7523 §2.1, RFC 8693 §2.1, RFC 8628 §3.4).
AUTHORIZATION_CODE = "authorization_code"
PASSWORD = "password"
REFRESH_TOKEN = "refresh_token"
CLIENT_CREDENTIALS = "client_credentials"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 50


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


#: A grant handler: the token-endpoint request → the RFC 6749 §5.1 response body.
GrantHandler = Callable[[AppServer, TokenRequest], Awaitable[dict[str, Any]]]


async def read_form(request: Request) -> dict[str, str]:
    """Parse an ``application/x-www-form-urlencoded`` body with no repeated parameters."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != FORM:
        raise InvalidRequest(f"the body must be {FORM}")
    try:
        pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True,
                          strict_parsing=False, max_num_fields=MAX_FORM_FIELDS)
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


async def authenticated_client(srv: AppServer, request: Request,
                               params: dict[str, str]) -> accounts.ClientInfo:
    """Authenticate the calling client; its id and whether it is public (has no secret)."""
    cid, secret = client_credentials(request, params)
    # one read, no transaction of its own (the grant that follows has its own)
    row = await srv.db.read_first(accounts.CLIENT_ROW, {"cid": cid})
    return accounts.client_from_row(cid, row, secret)


async def authenticate(srv: AppServer, request: Request, params: dict[str, str]) -> ClientId:
    """Authenticate the calling client (used by the token, revocation and introspection ends)."""
    return (await authenticated_client(srv, request, params)).client_id


async def authenticate_for_grant(srv: AppServer, request: Request, params: dict[str, str],
                                 grant_type: str) -> ClientId:
    """:func:`authenticate`, and the client must be allowed ``grant_type`` (one transaction;
    ``unauthorized_client`` otherwise)."""
    cid, secret = client_credentials(request, params)
    async with srv.db.begin() as conn:
        client = await accounts.check_client(conn, cid, secret)
        await accounts.check_grant(conn, client, grant_type)
    return client.client_id


def client_address(request: Request) -> str:
    """The peer address used for per-address limits."""
    return request.client.host if request.client else "unknown"


def oauth_error_response(exc: OAuthError) -> JSONResponse:
    """Render an OAuthError as RFC 6749 §5.2."""
    headers = dict(NO_STORE)
    if isinstance(exc, InvalidClient):
        headers["WWW-Authenticate"] = 'Basic realm="interapp"'
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
    return JSONResponse(exc.to_wire(), status_code=exc.status, headers=headers)


async def check_password(srv: AppServer, username: str, password: Secret,
                         address: str) -> User:
    """The account, when ``password`` is right: the one password check of this server, used
    by the password grant and by the sign-in page alike (same limits, same answers).

    The attempt is reserved on ``acct:USERNAME`` and ``addr:ADDRESS`` *before* the slow
    verification (a concurrent burst cannot all pass a check that only finished failures have
    moved; see :mod:`interapp.server.ratelimit`); while either is at its limit
    :class:`SlowDown` is raised and the password is not even looked at. Every other failure
    (unknown account, no password, wrong password) is the same :class:`InvalidGrant`, after one
    argon2 verification, so nothing tells which accounts exist.
    """
    account, addr = f"acct:{username.lower()[:64]}", f"addr:{address}"
    wait = await srv.limiter.reserve([account, addr])
    if wait is not None:
        raise SlowDown("too many failed logins; try again later", retry_after=wait)
    try:
        async with srv.db.begin() as conn:
            user, stored = await accounts.password_hash_of(conn, username)
    except UnavailableError:  # nothing was tried: an outage must not count as a failure
        await srv.limiter.succeeded(clear=[], refund=[account, addr])
        raise
    if not await srv.passwords.verify(stored, password) or user is None:
        raise InvalidGrant("invalid username or password")  # the reservation stays: a failure
    await srv.limiter.succeeded(clear=[account], refund=[addr])
    return user
