"""Issuing, rotating, looking up and revoking opaque tokens.

Theory of operation: a login creates a *family*; each family holds access tokens and at most one
live refresh token. Using a refresh token marks it used (``UPDATE … WHERE used_at IS NULL``, so
only one concurrent request can win) and issues a new pair in the same family. Presenting a
refresh token that was already used is treated as theft (OAuth 2.0 Security BCP §4.14): the whole
family is revoked. Revocation stamps ``revoked_at`` on the family and on every token in it, so
checking an access token is one primary-key lookup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.errors import InvalidGrant
from interapp.ids import ClientId, FamilyId, UserId
from interapp.secret import constant_time_equals
from interapp.server.storage.schema import token_families, tokens
from interapp.server.tokens import new_id, new_token, token_hash

ACCESS = "access"
REFRESH = "refresh"


@dataclass(frozen=True)
class TokenInfo:
    """What a valid token stands for."""

    user_id: UserId
    client_id: ClientId
    family_id: FamilyId
    kind: str
    scope: str
    issued_at: float
    expires_at: float


async def issue_pair(conn: AsyncConnection, *, user_id: str, client_id: str, grant_type: str,
                     access_ttl: int, refresh_ttl: int, family_id: str | None = None,
                     scope: str = "") -> dict[str, Any]:
    """Issue an access token and a refresh token; return the RFC 6749 §5.1 response body."""
    now = time.time()
    if family_id is None:
        family_id = new_id()
        await conn.execute(token_families.insert().values(
            id=family_id, user_id=user_id, client_id=client_id, grant_type=grant_type,
            created_at=now))
    access, refresh = new_token("ia_at"), new_token("ia_rt")
    await conn.execute(tokens.insert(), [
        {"hash": token_hash(access), "kind": ACCESS, "family_id": family_id, "user_id": user_id,
         "client_id": client_id, "scope": scope, "issued_at": now, "expires_at": now + access_ttl},
        {"hash": token_hash(refresh), "kind": REFRESH, "family_id": family_id,
         "user_id": user_id, "client_id": client_id, "scope": scope, "issued_at": now,
         "expires_at": now + refresh_ttl},
    ])
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                            "expires_in": access_ttl, "refresh_token": refresh}
    if scope:
        body["scope"] = scope
    return body


_COLUMNS = (tokens.c.hash, tokens.c.user_id, tokens.c.client_id, tokens.c.family_id,
            tokens.c.kind, tokens.c.scope, tokens.c.issued_at, tokens.c.expires_at,
            tokens.c.revoked_at, tokens.c.used_at)


async def lookup(conn: AsyncConnection, token: str, kind: str | None = None) -> TokenInfo | None:
    """The live token ``token`` (not expired, revoked or used), else None."""
    digest = token_hash(token)
    row = (await conn.execute(sa.select(*_COLUMNS).where(tokens.c.hash == digest))).first()
    if row is None or not constant_time_equals(row.hash, digest):
        return None
    if (kind and row.kind != kind) or row.revoked_at is not None or row.expires_at <= time.time():
        return None
    if row.kind == REFRESH and row.used_at is not None:
        return None
    return TokenInfo(UserId(row.user_id), ClientId(row.client_id), FamilyId(row.family_id),
                     row.kind, row.scope, row.issued_at, row.expires_at)


async def rotate_refresh(conn: AsyncConnection, token: str, client_id: str, *, access_ttl: int,
                         refresh_ttl: int) -> tuple[UserId, dict[str, Any]]:
    """Use a refresh token once: return a new pair, or revoke the family on re-use."""
    digest = token_hash(token)
    row = (await conn.execute(sa.select(*_COLUMNS).where(
        tokens.c.hash == digest, tokens.c.kind == REFRESH))).first()
    now = time.time()
    if row is None:
        raise InvalidGrant("unknown refresh token")
    if row.client_id != client_id:
        raise InvalidGrant("the refresh token was issued to another client")
    if row.revoked_at is not None:
        raise InvalidGrant("the refresh token was revoked")
    if row.expires_at <= now:
        raise InvalidGrant("the refresh token has expired")
    won = (await conn.execute(sa.update(tokens).where(
        tokens.c.hash == digest, tokens.c.used_at.is_(None)).values(used_at=now))).rowcount
    if row.used_at is not None or won != 1:
        raise ReusedRefreshToken(FamilyId(row.family_id))
    body = await issue_pair(conn, user_id=row.user_id, client_id=client_id,
                            grant_type="refresh_token", access_ttl=access_ttl,
                            refresh_ttl=refresh_ttl, family_id=row.family_id, scope=row.scope)
    return UserId(row.user_id), body


class ReusedRefreshToken(InvalidGrant):
    """A rotated refresh token came back: the caller must commit the family's revocation.

    Raised inside the rotating transaction (which rolls back); the token endpoint then revokes
    ``family_id`` in a transaction of its own before answering ``invalid_grant``.
    """

    def __init__(self, family_id: FamilyId) -> None:
        super().__init__("the refresh token was already used; its whole family is revoked")
        self.family_id = family_id


async def revoke_family(conn: AsyncConnection, family_id: str) -> None:
    """Revoke a login and every token it produced."""
    now = time.time()
    await conn.execute(sa.update(token_families).where(token_families.c.id == family_id,
                       token_families.c.revoked_at.is_(None)).values(revoked_at=now))
    await conn.execute(sa.update(tokens).where(tokens.c.family_id == family_id,
                       tokens.c.revoked_at.is_(None)).values(revoked_at=now))


async def revoke_user(conn: AsyncConnection, user_id: str) -> int:
    """Revoke every token of an account; return how many logins were revoked."""
    now = time.time()
    count = (await conn.execute(sa.update(token_families).where(
        token_families.c.user_id == user_id, token_families.c.revoked_at.is_(None))
        .values(revoked_at=now))).rowcount
    await conn.execute(sa.update(tokens).where(tokens.c.user_id == user_id,
                       tokens.c.revoked_at.is_(None)).values(revoked_at=now))
    return int(count or 0)


async def revoke_token(conn: AsyncConnection, token: str, client_id: str) -> bool:
    """RFC 7009: revoke ``token`` if it belongs to ``client_id``; refresh tokens take the family.

    Returns True when something was revoked. Unknown tokens are not an error (RFC 7009 §2.2).
    """
    row = (await conn.execute(sa.select(tokens.c.kind, tokens.c.family_id, tokens.c.client_id)
                              .where(tokens.c.hash == token_hash(token)))).first()
    if row is None or row.client_id != client_id:
        return False
    if row.kind == REFRESH:
        await revoke_family(conn, row.family_id)
    else:
        await conn.execute(sa.update(tokens).where(tokens.c.hash == token_hash(token))
                           .values(revoked_at=time.time()))
    return True
