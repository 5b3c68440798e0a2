"""RFC 7662: ``POST /oauth/introspect`` for authenticated clients.

§2.1 wants the caller authenticated, and §4 lets the server say ``{"active": false}`` to a caller
it will not tell: a *public* client (no secret, so anyone can claim to be it) learns about its
own tokens only; a confidential client (a resource server) about any token of this server.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from interapp.errors import InvalidRequest, OAuthError
from interapp.server import accounts
from interapp.server.core import AppServer
from interapp.server.oauth import issue
from interapp.server.oauth.base import (
    NO_STORE,
    authenticated_client,
    oauth_error_response,
    read_form,
)


async def introspect_endpoint(request: Request) -> JSONResponse:
    """Tell an authenticated client whether a token is active, and what it stands for."""
    srv: AppServer = request.app.state.server
    try:
        params = await read_form(request)
        caller = await authenticated_client(srv, request, params)
        token = params.get("token")
        if not token:
            raise InvalidRequest("missing parameter: token")
        async with srv.db.begin() as conn:
            info = await issue.lookup(conn, token)
            if info is not None and caller.public and info.client_id != caller.client_id:
                info = None  # another client's token: not this (unauthenticated) caller's business
            user = await accounts.get_user(conn, info.user_id) if info else None
    except OAuthError as exc:
        return oauth_error_response(exc)
    if info is None or user is None:
        return JSONResponse({"active": False}, headers=NO_STORE)
    return JSONResponse({
        "active": True, "client_id": info.client_id, "username": user.username,
        "sub": user.id, "iss": srv.issuer, "iat": int(info.issued_at), "exp": int(info.expires_at),
        "token_type": "Bearer" if info.kind == issue.ACCESS else "refresh_token",
        "scope": info.scope,
    }, headers=NO_STORE)
