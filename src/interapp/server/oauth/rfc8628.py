"""RFC 8628: the device authorization grant — for a host with no browser (SSH, a console).

Theory of operation: ``POST /oauth/device_authorization`` (an authenticated client that may use
the ``device_code`` grant) returns a ``device_code`` (kept only as a hash), a ``user_code`` of 8
letters from a 20-consonant alphabet shown as ``BCDF-GHJK`` (§6.1: no vowels, no look-alikes;
20^8 ≈ 2.6·10^10 codes), ``verification_uri`` (``/device``), ``verification_uri_complete``,
``expires_in`` and ``interval``. The user opens ``/device``, types the code (wrong codes count
against the address in the server's login limiter, §5.1), signs in as on the authorization
page and allows or denies. Meanwhile the device polls the token endpoint with
``grant_type=urn:ietf:params:oauth:grant-type:device_code`` and gets, per §3.5,
``authorization_pending``, ``slow_down`` (polled sooner than ``interval``, which then grows by
5 s), ``access_denied``, ``expired_token`` — or, once, the tokens (the row is marked
``issued`` by a conditional update, so two racing polls cannot both get them).
"""

from __future__ import annotations

import secrets
import time
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse

from interapp.errors import (
    AccessDenied,
    AuthorizationPending,
    ExpiredToken,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    OAuthError,
    PollingTooFast,
)
from interapp.server import accounts
from interapp.server.core import AppServer
from interapp.server.oauth import oidc
from interapp.server.oauth.base import (
    DEVICE_CODE,
    NO_STORE,
    TokenRequest,
    authenticate_for_grant,
    oauth_error_response,
    read_form,
)
from interapp.server.storage.schema import device_codes
from interapp.server.tokens import new_token, token_hash

ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 §6.1
USER_CODE_LENGTH = 8
SLOW_DOWN_STEP = 5  # §3.5: seconds added to the interval on every slow_down


class DeviceStatus(StrEnum):
    """Where a device authorization stands."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    ISSUED = "issued"


def new_user_code() -> str:
    """8 random letters of :data:`ALPHABET` (stored without the dash)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(USER_CODE_LENGTH))


def normalize_user_code(typed: str) -> str:
    """What the user typed, upper-cased, with dashes, spaces and other characters dropped."""
    return "".join(c for c in typed.upper() if c in ALPHABET)[:16]


def shown(code: str) -> str:
    """``BCDFGHJK`` → ``BCDF-GHJK``."""
    return f"{code[:4]}-{code[4:]}" if len(code) == USER_CODE_LENGTH else code


async def device_authorization_endpoint(request: Request) -> JSONResponse:
    """``POST /oauth/device_authorization`` (§3.1, §3.2)."""
    srv: AppServer = request.app.state.server
    try:
        params = await read_form(request)
        client_id = await authenticate_for_grant(srv, request, params, DEVICE_CODE)
        scopes = params.get("scope", "").split()
        unknown = [s for s in scopes if s not in oidc.SCOPES]
        if unknown:
            raise InvalidScope(f"unknown scope {unknown[0][:64]!r}: use "
                               + ", ".join(oidc.SCOPES))
        device_code = new_token("ia_dc")
        now = time.time()
        ttl, interval = srv.settings.device_code_ttl, srv.settings.device_poll_interval
        for _ in range(5):  # a clash of user codes is ~impossible; try again if it happens
            user_code = new_user_code()
            try:
                async with srv.db.begin() as conn:
                    await conn.execute(device_codes.delete().where(
                        device_codes.c.expires_at < now - ttl))
                    await conn.execute(device_codes.insert().values(
                        hash=token_hash(device_code), user_code=user_code, client_id=client_id,
                        scope=" ".join(dict.fromkeys(scopes)), status=DeviceStatus.PENDING,
                        interval=interval, expires_at=now + ttl))
                break
            except IntegrityError:
                continue
        else:
            raise InvalidRequest("could not allocate a user code; try again")
    except OAuthError as exc:
        return oauth_error_response(exc)
    verification = f"{srv.issuer}/device"
    return JSONResponse({
        "device_code": device_code, "user_code": shown(user_code),
        "verification_uri": verification,
        "verification_uri_complete": f"{verification}?user_code={shown(user_code)}",
        "expires_in": ttl, "interval": interval}, headers=NO_STORE)


async def device_code_grant(srv: AppServer, req: TokenRequest) -> dict[str, Any]:
    """The device's poll at the token endpoint (§3.4, §3.5)."""
    digest = token_hash(req.require("device_code"))
    await oidc.preload_keys(srv)
    now = time.time()
    async with srv.db.begin() as conn:
        row = (await conn.execute(sa.select(device_codes)
                                  .where(device_codes.c.hash == digest))).first()
        if row is None or row.client_id != req.client_id:
            raise InvalidGrant("unknown device code")
        if row.status == DeviceStatus.ISSUED:
            raise InvalidGrant("the device code was already used")
        if row.expires_at <= now:
            raise ExpiredToken("the device code has expired: start again")
        too_fast = row.last_poll_at is not None and now - row.last_poll_at < row.interval
        await conn.execute(sa.update(device_codes).where(device_codes.c.hash == digest).values(
            last_poll_at=now, interval=row.interval + (SLOW_DOWN_STEP if too_fast else 0)))
        outcome: OAuthError | None = None
        if too_fast:
            outcome = PollingTooFast(f"polled too soon: wait {row.interval + SLOW_DOWN_STEP} s "
                                     "between polls")
        elif row.status == DeviceStatus.PENDING:
            outcome = AuthorizationPending("the user has not finished yet; keep polling")
        elif row.status == DeviceStatus.DENIED:
            outcome = AccessDenied("the user denied the request")
        if outcome is None:
            won = (await conn.execute(sa.update(device_codes).where(
                device_codes.c.hash == digest, device_codes.c.status == DeviceStatus.APPROVED)
                .values(status=DeviceStatus.ISSUED))).rowcount
            client = await accounts.get_client(conn, req.client_id)
            user = await accounts.get_user(conn, row.user_id)
            if won != 1 or client is None or user is None:
                raise InvalidGrant("the device code was already used")
            body, family = await oidc.issue_login(srv, conn, client=client, user=user,
                                                  scope=row.scope, grant_type=DEVICE_CODE,
                                                  auth_time=row.auth_time)
            await conn.execute(sa.update(device_codes).where(device_codes.c.hash == digest)
                               .values(family_id=family))
            return body
    assert outcome is not None
    raise outcome  # after the commit: the poll's time (and a longer interval) is kept
