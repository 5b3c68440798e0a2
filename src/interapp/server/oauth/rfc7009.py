"""RFC 7009: ``POST /oauth/revoke``. Revoking a refresh token revokes its whole family."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from interapp.errors import InvalidRequest, OAuthError, UnsupportedTokenType
from interapp.server.core import AppServer
from interapp.server.oauth import issue
from interapp.server.oauth.base import NO_STORE, authenticate, oauth_error_response, read_form

HINTS = {"", "access_token", "refresh_token"}


async def revoke_endpoint(request: Request) -> Response:
    """Revoke a token of the calling client; 200 whether or not it existed (§2.2)."""
    srv: AppServer = request.app.state.server
    try:
        params = await read_form(request)
        client_id = await authenticate(srv, request, params)
        token = params.get("token")
        if not token:
            raise InvalidRequest("missing parameter: token")
        if params.get("token_type_hint", "") not in HINTS:
            raise UnsupportedTokenType("token_type_hint must be access_token or refresh_token")
        async with srv.db.begin() as conn:
            await issue.revoke_token(conn, token, client_id)
    except OAuthError as exc:
        return oauth_error_response(exc)
    return JSONResponse({}, headers=NO_STORE)
