"""Issuing, rotating, looking up and revoking opaque tokens.

Theory of operation: a login creates a *family*; each family holds access tokens and at most one
live refresh token. Using a refresh token marks it used (``UPDATE … WHERE used_at IS NULL``, so
only one concurrent request can win) and issues a new pair in the same family. Presenting a
refresh token that was already used is treated as theft (OAuth 2.0 Security BCP §4.14): the whole
family is revoked. Revocation stamps ``revoked_at`` on the family and on every token in it, so
checking an access token is one primary-key lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.errors import InvalidGrant, InvalidRequest
from interapp.ids import ClientId, FamilyId, UserId
from interapp.secret import constant_time_equals
from interapp.server import revocations
from interapp.server.storage.fastsql import Statement, run, run_many
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
                     scope: str = "", pair: tuple[str, str] | None = None) -> dict[str, Any]:
    """Issue an access token and a refresh token; return the RFC 6749 §5.1 response body.

    ``pair`` gives the two token strings (derived ones, for idempotent rotation); by default
    they are fresh random tokens.
    """
    now = time.time()
    if family_id is None:
        family_id = new_id()
        await conn.execute(token_families.insert().values(
            id=family_id, user_id=user_id, client_id=client_id, grant_type=grant_type,
            created_at=now))
    access, refresh = pair or (new_token("ia_at"), new_token("ia_rt"))
    await run_many(conn, _INSERT_TOKENS, [
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
            tokens.c.revoked_at, tokens.c.used_at, tokens.c.rotation_key)




class _TokenRow(NamedTuple):
    """A row of ``_COLUMNS``."""

    hash: str
    user_id: str
    client_id: str
    family_id: str
    kind: str
    scope: str
    issued_at: float
    expires_at: float
    revoked_at: float | None
    used_at: float | None
    rotation_key: str | None


# The rotation's statements, built and compiled once (storage.fastsql: on SQLite they run on
# the loop's connection itself, a refresh grant's hot path).
_REFRESH_ROW = Statement(sa.select(*_COLUMNS).where(tokens.c.hash == sa.bindparam("digest"),
                                                    tokens.c.kind == REFRESH))
_MARK_USED = Statement(
    sa.update(tokens).where(tokens.c.hash == sa.bindparam("digest"), tokens.c.used_at.is_(None))
    .values(used_at=sa.bindparam("now"), rotation_key=sa.bindparam("key")))
_INSERT_TOKENS = Statement(tokens.insert().values(
    {c.name: sa.bindparam(c.name) for c in tokens.c if c.name not in ("used_at", "revoked_at",
                                                                      "rotation_key")}))


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


def derived_pair(secret: bytes, old_digest: str, key: str) -> tuple[str, str]:
    """The pair a rotation with idempotency ``key`` yields (same inputs → same pair)."""
    def one(kind: str, prefix: str) -> str:
        mac = hmac.new(secret, f"{old_digest}\x00{key}\x00{kind}".encode(), hashlib.sha256)
        return f"{prefix}_{base64.urlsafe_b64encode(mac.digest()).decode().rstrip('=')}"

    return one("access", "ia_at"), one("refresh", "ia_rt")


async def _replay(conn: AsyncConnection, row: Any, key: str, secret: bytes,
                  access_ttl: int) -> dict[str, Any] | None:
    """The pair already issued for this exact retry, if the client has not moved on since."""
    if row.rotation_key is None or not constant_time_equals(
            row.rotation_key, hashlib.sha256(key.encode()).hexdigest()):
        return None
    access, refresh = derived_pair(secret, row.hash, key)
    successor = (await conn.execute(sa.select(tokens.c.used_at, tokens.c.revoked_at,
                                              tokens.c.expires_at)
                                    .where(tokens.c.hash == token_hash(refresh)))).first()
    if successor is None or successor.used_at is not None or successor.revoked_at is not None:
        return None
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                            "expires_in": access_ttl, "refresh_token": refresh}
    if row.scope:
        body["scope"] = row.scope
    return body


#: Default of how long after its rotation an idempotent retry is still answered (seconds).
REPLAY_WINDOW = 300.0


async def rotate_refresh(conn: AsyncConnection, token: str, client_id: str, *, access_ttl: int,
                         refresh_ttl: int, idempotency_key: str | None = None,
                         derivation_secret: bytes = b"",
                         replay_window: float = REPLAY_WINDOW) -> tuple[UserId, dict[str, Any]]:
    """Use a refresh token once: return a new pair, or revoke the family on re-use.

    With ``idempotency_key`` (an interapp extension) the new pair is derived from the old
    token, the key and a server secret, and the key's hash is kept on the old token: the *same*
    request retried — by a client that crashed before saving the answer — gets the same pair
    back, as long as that pair has not been used yet and the rotation is at most
    ``replay_window`` seconds old. Any other re-use revokes the family: an old token and its
    key, stolen together, are worth a few minutes at most, not the refresh lifetime.
    """
    digest = token_hash(token)
    rows, _ = await run(conn, _REFRESH_ROW, {"digest": digest})
    now = time.time()
    if not rows:
        raise InvalidGrant("unknown refresh token")
    row = _TokenRow(*rows[0])
    if row.client_id != client_id:
        raise InvalidGrant("the refresh token was issued to another client")
    if row.revoked_at is not None:
        raise InvalidGrant("the refresh token was revoked")
    if row.expires_at <= now:
        raise InvalidGrant("the refresh token has expired")
    if idempotency_key is not None and not (8 <= len(idempotency_key) <= 128):
        raise InvalidRequest("idempotency_key must be 8-128 characters")
    if row.used_at is not None and idempotency_key and derivation_secret \
            and now - row.used_at <= replay_window:
        replay = await _replay(conn, row, idempotency_key, derivation_secret, access_ttl)
        if replay is not None:
            return UserId(row.user_id), replay
    rotation_key = hashlib.sha256(idempotency_key.encode()).hexdigest() \
        if idempotency_key else None
    _, won = await run(conn, _MARK_USED, {"digest": digest, "now": now, "key": rotation_key})
    if row.used_at is not None or won != 1:
        raise ReusedRefreshToken(FamilyId(row.family_id))
    pair = derived_pair(derivation_secret, digest, idempotency_key) \
        if idempotency_key and derivation_secret else None
    body = await issue_pair(conn, user_id=row.user_id, client_id=client_id,
                            grant_type="refresh_token", access_ttl=access_ttl,
                            refresh_ttl=refresh_ttl, family_id=row.family_id, scope=row.scope,
                            pair=pair)
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
    revoked = await conn.execute(sa.update(tokens).where(
        tokens.c.family_id == family_id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=now).returning(tokens.c.user_id))
    await revocations.record(conn, {row.user_id for row in revoked})  # open streams close


async def revoke_user(conn: AsyncConnection, user_id: str) -> int:
    """Revoke every token of an account; return how many logins were revoked."""
    now = time.time()
    count = (await conn.execute(sa.update(token_families).where(
        token_families.c.user_id == user_id, token_families.c.revoked_at.is_(None))
        .values(revoked_at=now))).rowcount
    await conn.execute(sa.update(tokens).where(tokens.c.user_id == user_id,
                       tokens.c.revoked_at.is_(None)).values(revoked_at=now))
    await revocations.record(conn, [user_id])  # open streams close
    return int(count or 0)


async def revoke_token(conn: AsyncConnection, token: str, client_id: str) -> bool:
    """RFC 7009: revoke ``token`` if it belongs to ``client_id``; refresh tokens take the family.

    Returns True when something was revoked. Unknown tokens are not an error (RFC 7009 §2.2).
    """
    row = (await conn.execute(sa.select(tokens.c.kind, tokens.c.family_id, tokens.c.client_id,
                                        tokens.c.user_id)
                              .where(tokens.c.hash == token_hash(token)))).first()
    if row is None or row.client_id != client_id:
        return False
    if row.kind == REFRESH:
        await revoke_family(conn, row.family_id)
    else:
        await conn.execute(sa.update(tokens).where(tokens.c.hash == token_hash(token))
                           .values(revoked_at=time.time()))
        await revocations.record(conn, [row.user_id])  # its open streams close
    return True
