"""RFC 6749: the password (§4.3) and refresh-token (§6) grants.

The token endpoint that dispatches to them is :mod:`interapp.server.oauth.token`; what grants
share (the parsed request, client authentication) is :mod:`interapp.server.oauth.base`.
"""

from __future__ import annotations

from typing import Any

from interapp.errors import InvalidGrant, SlowDown, UnavailableError
from interapp.secret import Secret
from interapp.server import accounts
from interapp.server.core import AppServer
from interapp.server.oauth import issue
from interapp.server.oauth.base import PASSWORD, TokenRequest


async def password_grant(srv: AppServer, req: TokenRequest) -> dict[str, Any]:
    """§4.3: the user's own account information for this application."""
    username = req.require("username")
    password = Secret(req.require("password"))
    account, address = f"acct:{username.lower()[:64]}", f"addr:{req.address}"
    # the attempt is counted *before* the slow verification: a concurrent burst cannot all
    # pass a check that only failures already finished have moved (see ratelimit)
    wait = await srv.limiter.reserve([account, address])
    if wait is not None:
        raise SlowDown("too many failed logins; try again later", retry_after=wait)
    try:
        async with srv.db.begin() as conn:
            user, stored = await accounts.password_hash_of(conn, username)
    except UnavailableError:  # nothing was tried: an outage must not count as a failure
        await srv.limiter.succeeded(clear=[], refund=[account, address])
        raise
    if not await srv.passwords.verify(stored, password) or user is None:
        raise InvalidGrant("invalid username or password")  # the reservation stays: a failure
    await srv.limiter.succeeded(clear=[account], refund=[address])
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
