"""RFC 8628 §3.3: the ``/device`` page, where the user types the code shown by the device.

Theory of operation: the page takes the user code (normalized: upper case, the dash and other
characters dropped); each look-up reserves an attempt on the address in the server's login
limiter, refunded when the code names a pending, unexpired device authorization (RFC 8628 §5.1:
no brute-forcing of user codes), and while the address is locked no code is looked at. A good
code leads to the sign-in page (unless this browser is signed in) and the consent page of
:mod:`.pages`; the decision is written on the device authorization row with a conditional
update (only a pending one changes), which the device's next poll picks up.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from interapp.errors import InvalidGrant, InvalidRequest, SlowDown, UnavailableError
from interapp.secret import Secret
from interapp.server import accounts
from interapp.server.core import AppServer
from interapp.server.oauth.base import client_address
from interapp.server.oauth.pages import Page, SignedIn, read_page_form, scope_words
from interapp.server.oauth.rfc8628 import (
    USER_CODE_LENGTH,
    DeviceStatus,
    normalize_user_code,
    shown,
)
from interapp.server.storage.schema import device_codes


async def _pending(srv: AppServer, user_code: str) -> Any:
    """The pending, unexpired device authorization with this user code, if any."""
    if len(user_code) != USER_CODE_LENGTH:
        return None
    async with srv.db.begin() as conn:
        row = (await conn.execute(sa.select(device_codes.c.user_code, device_codes.c.client_id,
                                            device_codes.c.scope)
                                  .where(device_codes.c.user_code == user_code,
                                         device_codes.c.status == DeviceStatus.PENDING,
                                         device_codes.c.expires_at > time.time()))).first()
        client = await accounts.get_client(conn, row.client_id) if row else None
    return (row, client) if row and client else None


async def _lookup(srv: AppServer, user_code: str, address: str) -> Any:
    """:func:`_pending` behind the address's login limit: each look-up reserves an attempt
    (refunded when the code is good), so guessing codes is as limited as guessing passwords.
    None while the address is locked, False for a bad code."""
    addr = f"addr:{address}"
    if await srv.limiter.reserve([addr]) is not None:
        return None
    try:
        found = await _pending(srv, user_code)
    except UnavailableError:
        await srv.limiter.succeeded(clear=[], refund=[addr])
        raise
    if found is None:
        return False  # the reservation stays: a failure
    await srv.limiter.succeeded(clear=[], refund=[addr])
    return found


def _code_page(page: Page, *, user_code: str = "", error: str = "", status: int = 200
               ) -> Response:
    return page.render("device.html", status=status, user_code=user_code, error=error)


def _signin(page: Page, user_code: str, client_name: str, *, error: str = "",
            username: str = "", status: int = 200) -> Response:
    return page.render("signin.html", status=status, action="/device",
                       hidden={"user_code": user_code}, client_name=client_name,
                       issuer=page.srv.issuer, error=error, username=username)


def _consent(page: Page, user_code: str, client: accounts.ClientInfo, scope: str,
             who: SignedIn) -> Response:
    return page.render("consent.html", action="/device", hidden={"user_code": user_code},
                       client_name=client.name, username=who.user.username,
                       scopes=scope_words(scope or "interapp"), redirect_host="")


def _done(page: Page, heading: str, message: str) -> Response:
    return page.render("device_done.html", heading=heading, message=message)


async def device_page(request: Request) -> Response:
    """``GET``/``POST /device``: type the code, sign in, allow or deny."""
    srv: AppServer = request.app.state.server
    page = Page(srv, request)
    if request.method != "POST":
        typed = normalize_user_code(request.query_params.get("user_code", ""))
        return _code_page(page, user_code=shown(typed))
    try:
        form = await read_page_form(request)
        page.check_post(form)
    except InvalidRequest as exc:
        return page.render("error.html", status=400, heading="This form cannot be used",
                           message=exc.message)
    user_code = normalize_user_code(form.get("user_code", ""))
    found = await _lookup(srv, user_code, client_address(request))
    if found is None:
        return _code_page(page, user_code=shown(user_code), status=429, error=(
            "Too many wrong codes or sign-ins. Try again in a few minutes."))
    if found is False:
        return _code_page(page, user_code=shown(user_code), status=400,
                          error="That code is not valid, was already used or has expired.")
    row, client = found
    step = form.get("step")
    who = await page.signed_in()
    if step == "signin":
        username = form.get("username", "").strip()
        try:
            who = await page.sign_in(username, Secret(form.get("password", "")))
        except SlowDown:
            return _signin(page, user_code, client.name, username=username, status=429,
                           error="Too many failed sign-ins. Try again in a few minutes.")
        except InvalidGrant:
            return _signin(page, user_code, client.name, username=username, status=401,
                           error="Invalid username or password.")
    elif step == "signout":
        await page.sign_out()
        return _signin(page, user_code, client.name)
    elif step == "consent" and who is not None:
        allow = form.get("decision") == "allow"
        async with srv.db.begin() as conn:
            changed = (await conn.execute(sa.update(device_codes).where(
                device_codes.c.user_code == user_code,
                device_codes.c.status == DeviceStatus.PENDING).values(
                status=DeviceStatus.APPROVED if allow else DeviceStatus.DENIED,
                user_id=who.user.id if allow else None,
                auth_time=who.auth_time if allow else None))).rowcount
        if changed != 1:
            return _code_page(page, status=400, error="That code was already used.")
        if allow:
            return _done(page, "Device connected",
                         f"{client.name} is now signed in as {who.user.username}. "
                         "You can close this page and go back to your device.")
        return _done(page, "Request denied",
                     f"{client.name} was not given access. You can close this page.")
    if who is None:
        return _signin(page, user_code, client.name)
    return _consent(page, user_code, client, row.scope, who)
