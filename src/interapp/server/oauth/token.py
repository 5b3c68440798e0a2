"""RFC 6749 §3.2: ``POST /oauth/token``.

Theory of operation: the form body is parsed strictly (no repeated parameters), the client is
authenticated by HTTP Basic or ``client_secret_post`` (§2.3.1, never both), then the request is
dispatched on ``grant_type`` through the one table in :mod:`interapp.server.oauth.grants`.
Every failure is an :class:`~interapp.errors.OAuthError` rendered as the §5.2 JSON body with its
status; successes carry ``Cache-Control: no-store`` (§5.1).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from interapp.errors import InvalidRequest, OAuthError, UnsupportedGrantType
from interapp.server.core import AppServer
from interapp.server.oauth.base import (
    NO_STORE,
    REFRESH_TOKEN,
    TokenRequest,
    authenticate,
    client_address,
    oauth_error_response,
    read_form,
)
from interapp.server.oauth.grants import GRANTS
from interapp.server.observability import LOGINS, REFRESHES


async def token_endpoint(request: Request) -> JSONResponse:
    """``POST /oauth/token``."""
    srv: AppServer = request.app.state.server
    grant_type = ""
    try:
        params = await read_form(request)
        grant_type = params.pop("grant_type", "")
        if not grant_type:
            raise InvalidRequest("missing parameter: grant_type")
        client_id = await authenticate(srv, request, params)
        grant = GRANTS.get(grant_type)
        if grant is None:
            raise UnsupportedGrantType(f"grant type {grant_type[:100]!r} is not supported")
        body = await grant.handle(srv, TokenRequest(client_id, params, client_address(request)))
    except OAuthError as exc:
        _count(grant_type, exc.code)
        return oauth_error_response(exc)
    _count(grant_type, "ok")
    return JSONResponse(body, headers=NO_STORE)


def _count(grant_type: str, outcome: str) -> None:
    grant = GRANTS.get(grant_type)
    label = grant.label if grant else "other"
    LOGINS.labels(label, outcome).inc()
    if grant_type == REFRESH_TOKEN:
        REFRESHES.labels(outcome).inc()
