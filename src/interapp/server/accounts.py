"""Accounts, OAuth clients and trusted issuers: the rows behind verification.

Used by the HTTP endpoints and by the offline ``interapp admin`` commands alike.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.errors import ConfigError, InvalidClient, NotFoundError
from interapp.ids import ClientId, UserId
from interapp.secret import Secret, constant_time_equals
from interapp.server.keys import check_fetch_url, parse_jwks, well_known_jwks
from interapp.server.storage.fastsql import Statement
from interapp.server.storage.schema import clients, trusted_issuers, users
from interapp.server.tokens import new_id, new_token, token_hash

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class User:
    """An account of this application."""

    id: UserId
    username: str
    display_name: str
    presence: str
    status_text: str

    def profile(self) -> dict[str, Any]:
        """The public profile shape used by ``/v1/me`` and the buddy list."""
        return {"id": self.id, "username": self.username, "display_name": self.display_name,
                "presence": self.presence, "status_text": self.status_text}


USER_COLUMNS = (users.c.id, users.c.username, users.c.display_name, users.c.presence,
                users.c.status_text)


def _user(row: Any) -> User:
    return User(UserId(row.id), row.username, row.display_name, row.presence, row.status_text)


def check_username(username: str) -> str:
    """Validate a username (lower-case letters, digits, ``.``, ``_``, ``-``; at most 64)."""
    if not isinstance(username, str) or not USERNAME.match(username):
        raise ConfigError(f"invalid username {username!r}: use 1-64 lower-case letters, "
                          "digits, '.', '_' or '-'")
    return username


async def create_user(conn: AsyncConnection, username: str, *, display_name: str | None = None,
                      password_hash: str | None = None,
                      external_issuer: str | None = None) -> User:
    """Create an account; ConfigError when the username is taken."""
    check_username(username)
    display = (display_name or username).strip()[:128] or username
    uid = new_id()
    try:
        async with conn.begin_nested():
            await conn.execute(users.insert().values(
                id=uid, username=username, display_name=display, password_hash=password_hash,
                external_issuer=external_issuer, created_at=time.time(), presence="offline",
                status_text="", last_seq=0))
    except IntegrityError as exc:
        raise ConfigError(f"user {username!r} already exists") from exc
    return User(UserId(uid), username, display, "offline", "")


async def find_user(conn: AsyncConnection, username: str) -> User | None:
    """The account named ``username``, if any."""
    row = (await conn.execute(sa.select(*USER_COLUMNS)
                              .where(users.c.username == username))).first()
    return _user(row) if row else None


async def get_user(conn: AsyncConnection, user_id: str) -> User | None:
    """The account with id ``user_id``, if any."""
    row = (await conn.execute(sa.select(*USER_COLUMNS).where(users.c.id == user_id))).first()
    return _user(row) if row else None


async def require_user(conn: AsyncConnection, username: str) -> User:
    """The account named ``username``; NotFoundError otherwise."""
    user = await find_user(conn, username)
    if user is None:
        raise NotFoundError(f"no user {username!r}")
    return user


async def find_subject(conn: AsyncConnection, username: str) -> tuple[User | None, str | None]:
    """The account named ``username`` and the issuer it is bound to (None: a local account)."""
    row = (await conn.execute(sa.select(*USER_COLUMNS, users.c.external_issuer)
                              .where(users.c.username == username))).first()
    if row is None:
        return None, None
    return _user(row), row.external_issuer


async def password_hash_of(conn: AsyncConnection, username: str) -> tuple[User | None, str | None]:
    """The account and its stored password hash (None when it has no password)."""
    row = (await conn.execute(sa.select(*USER_COLUMNS, users.c.password_hash)
                              .where(users.c.username == username))).first()
    if row is None:
        return None, None
    return _user(row), row.password_hash


async def set_password_hash(conn: AsyncConnection, user_id: str, password_hash: str) -> None:
    """Replace an account's password hash."""
    await conn.execute(sa.update(users).where(users.c.id == user_id)
                       .values(password_hash=password_hash))


async def create_client(conn: AsyncConnection, name: str, *,
                        public: bool) -> tuple[ClientId, Secret | None]:
    """Register an OAuth client; returns its id and (confidential clients) its secret."""
    if not name or len(name) > 128:
        raise ConfigError("client name must be 1-128 characters")
    client_id = ClientId(f"ia_{new_id()[:20]}")
    secret = None if public else Secret(new_token("ia_cs"))
    try:
        async with conn.begin_nested():
            await conn.execute(clients.insert().values(
                client_id=client_id, name=name, public=public, created_at=time.time(),
                secret_hash=token_hash(secret.reveal()) if secret else None))
    except IntegrityError as exc:
        raise ConfigError(f"client {name!r} already exists") from exc
    return client_id, secret


@dataclass(frozen=True)
class ClientInfo:
    """An authenticated OAuth client."""

    client_id: ClientId
    public: bool


CLIENT_ROW = Statement(sa.select(clients.c.secret_hash, clients.c.public).where(
    clients.c.client_id == sa.bindparam("cid")))
"""A client's ``(secret_hash, public)``: one read per token request (``Database.read_first``)."""


async def check_client(conn: AsyncConnection, client_id: str,
                       secret: Secret | None) -> ClientInfo:
    """Check a client's credentials (RFC 6749 §2.3); InvalidClient on any failure."""
    row = (await conn.execute(CLIENT_ROW.statement, {"cid": client_id})).first()
    return client_from_row(client_id, None if row is None else (row[0], row[1]), secret)


def client_from_row(client_id: str, row: tuple[Any, ...] | None,
                    secret: Secret | None) -> ClientInfo:
    """Check ``secret`` against the client's :data:`CLIENT_ROW` (None: no such client)."""
    if row is None:
        raise InvalidClient("unknown client or bad client credentials")
    secret_hash, public = row
    if public:
        if secret is not None and secret.reveal():
            raise InvalidClient("public clients do not have a secret")
        return ClientInfo(ClientId(client_id), public=True)
    if secret is None or not constant_time_equals(token_hash(secret.reveal()),
                                                  secret_hash or ""):
        raise InvalidClient("unknown client or bad client credentials")
    return ClientInfo(ClientId(client_id), public=False)


async def authenticate_client(conn: AsyncConnection, client_id: str,
                              secret: Secret | None) -> ClientId:
    """Check a client's credentials (RFC 6749 §2.3); InvalidClient on any failure."""
    return (await check_client(conn, client_id, secret)).client_id


@dataclass(frozen=True)
class IssuerTrust:
    """What an operator allowed a trusted issuer (``admin trust-issuer``)."""

    issuer: str
    may_sign_in_local_accounts: bool


async def issuer_trust(conn: AsyncConnection, issuer: str) -> IssuerTrust | None:
    """The trust entry of ``issuer``; None when it is not trusted."""
    row = (await conn.execute(sa.select(trusted_issuers.c.may_sign_in_local_accounts)
                              .where(trusted_issuers.c.issuer == issuer))).first()
    return None if row is None else IssuerTrust(issuer, bool(row[0]))


async def trust_issuer(conn: AsyncConnection, issuer: str, *, jwks: str | None,
                       jwks_url: str | None, may_sign_in_local_accounts: bool = False) -> None:
    """Trust assertions signed by ``issuer`` (same account system); replaces an earlier entry.

    The issuer signs in to the accounts it created here (``users.external_issuer``); to this
    application's own (local) accounts only with ``may_sign_in_local_accounts``. Keys that are
    fetched (``jwks_url``, or ``ISSUER/.well-known/jwks.json`` without ``jwks``) must be served
    over https, except from a loopback address.
    """
    if not issuer.startswith(("http://", "https://")):
        raise ConfigError("the issuer must be an http(s) URL")
    issuer = issuer.rstrip("/")
    if jwks is not None:
        parse_jwks(jwks)
        jwks = json.dumps(json.loads(jwks))
    elif jwks_url is not None:
        if not jwks_url.startswith(("http://", "https://")):
            raise ConfigError("--jwks-url must be an http(s) URL")
        check_fetch_url(jwks_url, "--jwks-url")
    else:
        check_fetch_url(well_known_jwks(issuer), "the issuer (its keys are fetched from it)")
    await conn.execute(trusted_issuers.delete().where(trusted_issuers.c.issuer == issuer))
    await conn.execute(trusted_issuers.insert().values(
        issuer=issuer, jwks=jwks, jwks_url=jwks_url, created_at=time.time(),
        may_sign_in_local_accounts=may_sign_in_local_accounts))
