"""Bearer-token authentication for ``/v1``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.errors import Forbidden, Unauthorized
from interapp.ids import ClientId
from interapp.server import accounts
from interapp.server.accounts import User
from interapp.server.core import AppServer
from interapp.server.groupcommit import Check
from interapp.server.oauth import issue
from interapp.server.storage.fastsql import Statement, run
from interapp.server.storage.schema import tokens, users
from interapp.server.tokens import token_hash


@dataclass(frozen=True)
class Caller:
    """The verified account behind a request, and the client it used."""

    user: User
    client_id: ClientId


def server(request: Request) -> AppServer:
    """The process's AppServer."""
    srv: AppServer = request.app.state.server
    return srv


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer …`` header; Unauthorized otherwise."""
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


# Built and compiled once (storage.fastsql): this runs on every /v1 request and every send.
_AUTH = Statement(sa.select(tokens.c.client_id, tokens.c.scope, *accounts.USER_COLUMNS)
                  .select_from(tokens.join(users, users.c.id == tokens.c.user_id))
                  .where(tokens.c.hash == sa.bindparam("digest"), tokens.c.kind == issue.ACCESS,
                         tokens.c.revoked_at.is_(None),
                         tokens.c.expires_at > sa.bindparam("now")))

# The hot reads' one statement (api.hotreads): the live token's account, its last_seq and the
# token's scope (checked as for every /v1 request: see check_scope).
AUTH_SEQ = Statement(
    sa.select(users.c.id, users.c.last_seq, tokens.c.scope)
    .select_from(tokens.join(users, users.c.id == tokens.c.user_id))
    .where(tokens.c.hash == sa.bindparam("digest"), tokens.c.kind == issue.ACCESS,
           tokens.c.revoked_at.is_(None), tokens.c.expires_at > sa.bindparam("now")))


def scope_allows_api(scope: str | None) -> bool:
    """Whether a token with ``scope`` may use ``/v1`` (unscoped tokens may)."""
    return not scope or accounts.API_SCOPE in scope.split()


def check_scope(scope: str | None) -> None:
    """Forbidden unless a token with a scope has the API's scope (unscoped tokens pass)."""
    if not scope_allows_api(scope):
        # e.g. an OpenID Connect login for another service ("openid profile"): it may read
        # who the user is (/oauth/userinfo), not the user's buddies and messages
        raise Forbidden(f"this access token was not granted the {accounts.API_SCOPE} scope "
                        "(the /v1 API)")


async def authenticate_token(srv: AppServer, token: str) -> Caller:
    """Resolve an access token to its account; Unauthorized when not live.

    One read (token joined to its account, liveness checked in SQL), without a transaction of
    its own: this is the hot path of the whole ``/v1`` API.
    """
    return _caller(await srv.db.read_first(_AUTH, {"digest": token_hash(token),
                                                   "now": time.time()}))


async def token_caller(conn: AsyncConnection, token: str) -> Caller:
    """:func:`authenticate_token` inside the caller's transaction."""
    rows, _ = await run(conn, _AUTH, {"digest": token_hash(token), "now": time.time()})
    return _caller(rows[0] if rows else None)


def _caller(row: tuple[Any, ...] | None) -> Caller:
    if row is None:
        raise Unauthorized("the access token is invalid, expired or revoked")
    client_id, scope = row[0], row[1]
    check_scope(scope)
    return Caller(accounts.user_of(row[2:]), ClientId(client_id))


def token_check(token: str, user_id: str | None = None) -> Check:
    """A group-commit :data:`~interapp.server.groupcommit.Check`: the token looked up in the
    batch's transaction (no transaction of its own), optionally required to name ``user_id``."""

    async def check(conn: AsyncConnection) -> User:
        who = await token_caller(conn, token)
        if user_id is not None and who.user.id != user_id:
            raise Unauthorized("the token no longer names this stream's account")
        return who.user

    return check


async def caller(request: Request) -> Caller:
    """FastAPI dependency: the authenticated caller."""
    return await authenticate_token(server(request), bearer_token(
        request.headers.get("authorization")))
