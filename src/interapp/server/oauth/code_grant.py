"""RFC 6749 §4.1.3: the ``authorization_code`` grant, with PKCE (RFC 7636) always.

Theory of operation: the code is looked up by its hash. It must belong to the calling client,
be unexpired (≤ 60 s) and unused; ``redirect_uri`` must be the authorization request's when
that request named one (§4.1.3); the ``code_verifier`` must match the stored S256 challenge.
Only then is the code marked used (``UPDATE … WHERE used_at IS NULL``: of two concurrent
redemptions one wins) and a login issued in the same transaction; the new family is written on
the code. A code presented again is a replay (§4.1.2, §10.5): ``invalid_grant``, and the family
it issued — every access and refresh token of that login — is revoked.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from interapp.errors import InvalidGrant
from interapp.server import accounts
from interapp.server.core import AppServer
from interapp.server.oauth import issue, oidc, rfc7636
from interapp.server.oauth.base import AUTHORIZATION_CODE, TokenRequest
from interapp.server.storage.schema import authorization_codes
from interapp.server.tokens import token_hash

_CODE = sa.select(authorization_codes).where(authorization_codes.c.hash == sa.bindparam("h"))
_SPEND = (sa.update(authorization_codes)
          .where(authorization_codes.c.hash == sa.bindparam("h"),
                 authorization_codes.c.used_at.is_(None))
          .values(used_at=sa.bindparam("now")))


class ReplayedCode(InvalidGrant):
    """A spent code came back: the login it issued is revoked (after the rollback)."""

    def __init__(self, family_id: str | None) -> None:
        super().__init__("the authorization code was already used; the tokens it issued are "
                         "revoked")
        self.family_id = family_id


async def authorization_code_grant(srv: AppServer, req: TokenRequest) -> dict[str, Any]:
    """Exchange a code (and its PKCE verifier) for tokens, and an ID token with ``openid``."""
    code = req.require("code")
    digest = token_hash(code)
    await oidc.preload_keys(srv)
    try:
        async with srv.db.begin() as conn:
            row = (await conn.execute(_CODE, {"h": digest})).first()
            if row is None:
                raise InvalidGrant("unknown authorization code")
            if row.client_id != req.client_id:
                raise InvalidGrant("the authorization code was issued to another client")
            if row.used_at is not None:
                raise ReplayedCode(row.family_id)
            if row.expires_at <= time.time():
                raise InvalidGrant("the authorization code has expired")
            given = req.params.get("redirect_uri")
            if (row.redirect_given or given is not None) and given != row.redirect_uri:
                raise InvalidGrant("redirect_uri is not the one of the authorization request")
            rfc7636.verify(req.params.get("code_verifier"), row.code_challenge)
            if (await conn.execute(_SPEND, {"h": digest, "now": time.time()})).rowcount != 1:
                raise ReplayedCode(None)  # a concurrent redemption won; it is revoked below
            client = await accounts.get_client(conn, req.client_id)
            user = await accounts.get_user(conn, row.user_id)
            if client is None or user is None:
                raise InvalidGrant("the account or client no longer exists")
            body, family = await oidc.issue_login(
                srv, conn, client=client, user=user, scope=row.scope,
                grant_type=AUTHORIZATION_CODE, nonce=row.nonce, auth_time=row.auth_time)
            await conn.execute(sa.update(authorization_codes)
                               .where(authorization_codes.c.hash == digest)
                               .values(family_id=family))
            return body
    except ReplayedCode as replay:
        async with srv.db.begin() as conn:
            spent = replay.family_id or (await conn.execute(
                sa.select(authorization_codes.c.family_id)
                .where(authorization_codes.c.hash == digest))).scalar()
            if spent:
                await issue.revoke_family(conn, spent)
        raise
