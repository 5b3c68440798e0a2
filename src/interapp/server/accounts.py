"""Accounts, OAuth clients and trusted issuers: the rows behind verification.

Used by the HTTP endpoints and by the offline ``interapp admin`` commands alike.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.errors import ConfigError, InvalidClient, NotFoundError, UnauthorizedClient
from interapp.ids import ClientId, UserId
from interapp.secret import Secret, constant_time_equals
from interapp.server.keys import check_fetch_url, parse_jwks, well_known_jwks
from interapp.server.storage.fastsql import Statement
from interapp.server.storage.schema import app_policy, clients, trusted_issuers, users
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
    activity: str | None = None  # the stored JSON text of the activity (validated on write)

    def profile(self) -> dict[str, Any]:
        """The public profile shape used by ``/v1/me`` and the buddy list."""
        return {"id": self.id, "username": self.username, "display_name": self.display_name,
                "presence": self.presence, "status_text": self.status_text,
                "activity": activity_of(self.activity)}


def activity_of(stored: str | None) -> dict[str, Any] | None:
    """The wire form of a stored activity (it was checked before it was stored)."""
    if not stored:
        return None
    value: dict[str, Any] = json.loads(stored)
    return value


USER_COLUMNS = (users.c.id, users.c.username, users.c.display_name, users.c.presence,
                users.c.status_text, users.c.activity)


def user_of(row: Any) -> User:
    """A :class:`User` from a row that starts with :data:`USER_COLUMNS`, in that order."""
    uid, username, display_name, presence, status_text, activity = tuple(row)[:6]
    return User(UserId(uid), username, display_name, presence, status_text, activity)


def _user(row: Any) -> User:
    return User(UserId(row.id), row.username, row.display_name, row.presence, row.status_text,
                row.activity)


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


# --- OAuth clients --------------------------------------------------------------------------

PASSWORD_GRANT = "password"
REFRESH_GRANT = "refresh_token"
AUTHORIZATION_CODE_GRANT = "authorization_code"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
#: Every grant type a client may be given (``admin add-client --grant``).
KNOWN_GRANTS = (AUTHORIZATION_CODE_GRANT, DEVICE_CODE_GRANT, PASSWORD_GRANT, REFRESH_GRANT,
                JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT)
#: What a client may do when no ``--grant`` was given: what every client could do before
#: migration 0006 (clients made before it keep exactly this).
LEGACY_GRANTS = frozenset({PASSWORD_GRANT, REFRESH_GRANT, JWT_BEARER_GRANT,
                           TOKEN_EXCHANGE_GRANT})
ID_TOKEN_ALGS = ("ES256", "RS256")
#: The scope a token needs for ``/v1`` — unless it has no scope at all, as every token of the
#: password, refresh, jwt-bearer and token-exchange grants (and an authorization asking none).
API_SCOPE = "interapp"
MAX_REDIRECT_URIS = 20
LOOPBACK_HOSTS = ("127.0.0.1", "[::1]")


@dataclass(frozen=True)
class ClientInfo:
    """A registered OAuth client, as the authorization and token endpoints need it."""

    client_id: ClientId
    name: str
    public: bool
    redirect_uris: tuple[str, ...]
    grant_types: frozenset[str]
    id_token_alg: str

    def allows(self, grant_type: str) -> bool:
        """May this client use ``grant_type``? (``refresh_token`` comes with every login.)"""
        return grant_type in self.grant_types or (
            grant_type == REFRESH_GRANT and bool(self.grant_types - {REFRESH_GRANT}))


def check_redirect_uri(uri: str) -> str:
    """Validate a redirect URI to register: absolute, no fragment, and ``https``, a loopback
    ``http`` URI (RFC 8252 §7.3) or a private-use scheme of a native app (§7.1)."""
    if not uri or len(uri) > 2048 or any(c.isspace() or c == "\x00" for c in uri):
        raise ConfigError(f"invalid redirect URI {uri[:80]!r}: 1-2048 characters, no spaces")
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri:
        raise ConfigError(f"redirect URI {uri!r} must not have a fragment (RFC 6749 §3.1.2)")
    scheme = parts.scheme.lower()
    if scheme == "https" and parts.netloc:
        return uri
    if scheme == "http":
        if is_loopback_uri(uri) or parts.hostname == "localhost":
            return uri
        raise ConfigError(f"redirect URI {uri!r}: http is allowed only on loopback "
                          "(127.0.0.1 or [::1]); use https")
    if "." in scheme and not parts.netloc.startswith("/"):  # com.example.app:/callback
        return uri
    raise ConfigError(f"redirect URI {uri!r} must be https://…, http://127.0.0.1…, "
                      "or a private-use scheme such as com.example.app:/callback")


def is_loopback_uri(uri: str) -> bool:
    """An ``http`` URI on a loopback IP literal (RFC 8252 §7.3: any port will match it)."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "http" or not parts.hostname:
        return False
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def redirect_uri_matches(registered: str, given: str) -> bool:
    """Exact string match, except that a registered loopback IP URI matches any port
    (RFC 8252 §7.3); scheme, host, path and query must still be identical."""
    if given == registered:
        return True
    if not (is_loopback_uri(registered) and is_loopback_uri(given)):
        return False
    reg, got = urlsplit(registered), urlsplit(given)
    try:
        got.port  # noqa: B018 - a malformed port raises ValueError
    except ValueError:
        return False
    return (reg.scheme, reg.hostname, reg.path, reg.query) == \
        (got.scheme, got.hostname, got.path, got.query) and not got.username


def check_grants(grant_types: Iterable[str]) -> frozenset[str]:
    """Validate grant type names (see :data:`KNOWN_GRANTS`)."""
    out = frozenset(grant_types)
    unknown = sorted(out - set(KNOWN_GRANTS))
    if unknown:
        raise ConfigError(f"unknown grant type {unknown[0]!r}: use "
                          + ", ".join(KNOWN_GRANTS))
    return out


async def create_client(conn: AsyncConnection, name: str, *, public: bool,
                        redirect_uris: Iterable[str] = (),
                        grant_types: Iterable[str] | None = None,
                        id_token_alg: str | None = None) -> tuple[ClientId, Secret | None]:
    """Register an OAuth client; returns its id and (confidential clients) its secret.

    Without ``grant_types`` it gets the grants every client had before 0006, plus
    ``authorization_code`` when it has redirect URIs.
    """
    if not name or len(name) > 128:
        raise ConfigError("client name must be 1-128 characters")
    uris = list(dict.fromkeys(check_redirect_uri(u) for u in redirect_uris))
    if len(uris) > MAX_REDIRECT_URIS:
        raise ConfigError(f"at most {MAX_REDIRECT_URIS} redirect URIs")
    grants = check_grants(grant_types) if grant_types is not None else None
    if grants is None and uris:
        grants = LEGACY_GRANTS | {AUTHORIZATION_CODE_GRANT}
    if grants is not None and AUTHORIZATION_CODE_GRANT in grants and not uris:
        raise ConfigError("the authorization_code grant needs at least one --redirect-uri")
    if id_token_alg is not None and id_token_alg not in ID_TOKEN_ALGS:
        raise ConfigError(f"the ID token algorithm must be one of {', '.join(ID_TOKEN_ALGS)}")
    client_id = ClientId(f"ia_{new_id()[:20]}")
    secret = None if public else Secret(new_token("ia_cs"))
    try:
        async with conn.begin_nested():
            await conn.execute(clients.insert().values(
                client_id=client_id, name=name, public=public, created_at=time.time(),
                secret_hash=token_hash(secret.reveal()) if secret else None,
                redirect_uris=json.dumps(uris),
                grant_types=json.dumps(sorted(grants)) if grants is not None else None,
                id_token_alg=id_token_alg))
    except IntegrityError as exc:
        raise ConfigError(f"client {name!r} already exists") from exc
    return client_id, secret


_CLIENT_INFO = (clients.c.client_id, clients.c.name, clients.c.public, clients.c.redirect_uris,
                clients.c.grant_types, clients.c.id_token_alg)


def _client_info(row: Sequence[Any]) -> ClientInfo:
    """A :class:`ClientInfo` from the :data:`_CLIENT_INFO` columns (a row or a plain tuple)."""
    client_id, name, public, redirect_uris, grant_types, id_token_alg = tuple(row)
    grants = LEGACY_GRANTS if grant_types is None else frozenset(json.loads(grant_types))
    return ClientInfo(ClientId(client_id), name, bool(public),
                      tuple(json.loads(redirect_uris or "[]")), grants, id_token_alg or "ES256")


async def get_client(conn: AsyncConnection, client_id: str) -> ClientInfo | None:
    """The client with this ``client_id``, if any."""
    row = (await conn.execute(sa.select(*_CLIENT_INFO)
                              .where(clients.c.client_id == client_id))).first()
    return _client_info(row) if row else None


async def require_client_named(conn: AsyncConnection, name: str) -> ClientInfo:
    """The client registered under ``name``; NotFoundError otherwise."""
    row = (await conn.execute(sa.select(*_CLIENT_INFO).where(clients.c.name == name))).first()
    if row is None:
        raise NotFoundError(f"no client {name!r}")
    return _client_info(row)


async def set_client_grants(conn: AsyncConnection, client_id: str,
                            grant_types: Iterable[str]) -> None:
    """Replace the grant types a client may use."""
    grants = check_grants(grant_types)
    await conn.execute(sa.update(clients).where(clients.c.client_id == client_id)
                       .values(grant_types=json.dumps(sorted(grants))))


# --- per-application policy -----------------------------------------------------------------

POLICY_PASSWORD_GRANT = "password_grant"
POLICIES = {POLICY_PASSWORD_GRANT: ("on", "off")}


async def get_policy(conn: AsyncConnection, name: str) -> str:
    """A policy switch of this application (default: the first allowed value, ``on``)."""
    value = (await conn.execute(sa.select(app_policy.c.value)
                                .where(app_policy.c.name == name))).scalar()
    return str(value) if value is not None else POLICIES[name][0]


async def set_policy(conn: AsyncConnection, name: str, value: str) -> None:
    """Set a policy switch of this application."""
    if value not in POLICIES.get(name, ()):
        raise ConfigError(f"policy {name} must be one of {', '.join(POLICIES.get(name, ()))}")
    await conn.execute(app_policy.delete().where(app_policy.c.name == name))
    await conn.execute(app_policy.insert().values(name=name, value=value,
                                                  updated_at=time.time()))


async def check_grant(conn: AsyncConnection, client: ClientInfo, grant_type: str) -> None:
    """UnauthorizedClient unless ``client`` may use ``grant_type`` here.

    The password grant also needs the application's ``password_grant`` policy to be ``on``.
    """
    if not client.allows(grant_type):
        raise UnauthorizedClient(f"this client may not use the {grant_type[:100]} grant")
    if grant_type == PASSWORD_GRANT and \
            await get_policy(conn, POLICY_PASSWORD_GRANT) == "off":
        raise UnauthorizedClient("the password grant is switched off on this application")


async def require_grant(conn: AsyncConnection, client_id: str, grant_type: str) -> ClientInfo:
    """The client ``client_id``, when it may use ``grant_type`` (see :func:`check_grant`)."""
    client = await get_client(conn, client_id)
    if client is None:
        raise InvalidClient("unknown client or bad client credentials")
    await check_grant(conn, client, grant_type)
    return client


CLIENT_ROW = Statement(sa.select(clients.c.secret_hash, *_CLIENT_INFO).where(
    clients.c.client_id == sa.bindparam("cid")))
"""A client's secret hash and :class:`ClientInfo` columns: one read per token request
(``Database.read_first``)."""


async def check_client(conn: AsyncConnection, client_id: str,
                       secret: Secret | None) -> ClientInfo:
    """Check a client's credentials (RFC 6749 §2.3); InvalidClient on any failure. Returns
    the whole client (its grants, redirect URIs, whether it is public) in one query."""
    row = (await conn.execute(CLIENT_ROW.statement, {"cid": client_id})).first()
    return client_from_row(client_id, None if row is None else tuple(row), secret)


def client_from_row(client_id: str, row: Sequence[Any] | None,
                    secret: Secret | None) -> ClientInfo:
    """Check ``secret`` against the client's :data:`CLIENT_ROW` (None: no such client)."""
    if row is None:
        raise InvalidClient("unknown client or bad client credentials")
    secret_hash, info = row[0], _client_info(row[1:])
    if info.public:
        if secret is not None and secret.reveal():
            raise InvalidClient("public clients do not have a secret")
        return info
    if secret is None or not constant_time_equals(token_hash(secret.reveal()),
                                                  secret_hash or ""):
        raise InvalidClient("unknown client or bad client credentials")
    return info


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
