"""RFC 6749: the password (§4.3) and refresh-token (§6) grants.

The token endpoint that dispatches to them is :mod:`interapp.server.oauth.token`; what grants
share (the parsed request, client authentication) is :mod:`interapp.server.oauth.base`.
"""

from __future__ import annotations

from typing import Any

from interapp.secret import Secret
from interapp.server.core import AppServer
from interapp.server.oauth import issue
from interapp.server.oauth.base import PASSWORD, TokenRequest, check_password


async def password_grant(srv: AppServer, req: TokenRequest) -> dict[str, Any]:
    """§4.3: the user's own account information for this application."""
    user = await check_password(srv, req.require("username"),
                                Secret(req.require("password")), req.address)
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
                derivation_secret=srv.derivation_secret,
                replay_window=srv.settings.refresh_replay_seconds)
    except issue.ReusedRefreshToken as reused:
        async with srv.db.begin() as conn:
            await issue.revoke_family(conn, reused.family_id)
        raise
    return body
