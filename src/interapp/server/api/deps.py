"""Bearer-token authentication for ``/v1``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from interapp.errors import Unauthorized
from interapp.ids import ClientId
from interapp.server import accounts
from interapp.server.accounts import User
from interapp.server.core import AppServer
from interapp.server.oauth import issue


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


async def authenticate_token(srv: AppServer, token: str) -> Caller:
    """Resolve an access token to its account; Unauthorized when not live."""
    async with srv.db.begin() as conn:
        info = await issue.lookup(conn, token, issue.ACCESS)
        user = await accounts.get_user(conn, info.user_id) if info else None
    if info is None or user is None:
        raise Unauthorized("the access token is invalid, expired or revoked")
    return Caller(user, info.client_id)


async def caller(request: Request) -> Caller:
    """FastAPI dependency: the authenticated caller."""
    return await authenticate_token(server(request), bearer_token(
        request.headers.get("authorization")))
