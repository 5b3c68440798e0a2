"""RFC 6749 §4.1: the authorization endpoint ``GET``/``POST /oauth/authorize``.

Theory of operation: the request is checked in the order RFC 6749 §4.1.2.1 demands. While the
client or the redirect URI is in doubt nothing is redirected: the browser gets an error page.
Once both are known good (``client_id`` registered; ``redirect_uri`` one of its URIs exactly,
or a loopback IP URI with another port, RFC 8252 §7.3; may be left out when the client has only
one), every other error goes back to the client on that URI as ``error``, ``state`` and ``iss``
(RFC 9207). ``response_type`` must be ``code``, PKCE ``S256`` is required (RFC 7636), scopes
are ``openid``, ``profile`` and ``interapp``. ``prompt=login`` asks for the password again;
``prompt=none`` answers ``login_required`` or ``consent_required`` at once (consent is asked
every time here).

Then the user signs in (unless this browser already did: see :mod:`.pages`) and is asked for
consent, every time. The pages post back here with the authorization request carried verbatim
in a hidden ``request`` field, which is checked again like a new request. "Allow" stores a
single-use code (a hash of it) for ``authorization_code_ttl`` ≤ 60 s and sends the browser to
``redirect_uri?code=…&state=…&iss=…`` (303); "Deny" sends ``error=access_denied``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from interapp.errors import (
    AccessDenied,
    ConsentRequired,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    LoginRequired,
    OAuthError,
    SlowDown,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from interapp.secret import Secret
from interapp.server import accounts
from interapp.server.accounts import ClientInfo
from interapp.server.core import AppServer
from interapp.server.oauth import rfc7636
from interapp.server.oauth.base import AUTHORIZATION_CODE
from interapp.server.oauth.oidc import SCOPES
from interapp.server.oauth.pages import Page, SignedIn, read_page_form, scope_words
from interapp.server.storage.schema import authorization_codes
from interapp.server.tokens import new_token, token_hash

MAX_STATE = 2048
MAX_NONCE = 512
KEEP_USED_CODES = 600  # seconds a spent code is kept after expiry, to catch late replays


class PageError(Exception):
    """The request cannot be sent back to the client: show an error page instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class AuthorizationRequest:
    """A checked authorization request."""

    client: ClientInfo
    redirect_uri: str
    redirect_given: bool
    scope: str
    state: str | None
    code_challenge: str
    nonce: str | None
    prompt: frozenset[str]
    raw: str  # the request's parameters, urlencoded, carried by the pages' forms


class RedirectError(Exception):
    """An error the client gets on its redirect URI (RFC 6749 §4.1.2.1)."""

    def __init__(self, request: AuthorizationRequest | tuple[str, str | None],
                 error: OAuthError) -> None:
        super().__init__(error.message)
        if isinstance(request, AuthorizationRequest):
            request = (request.redirect_uri, request.state)
        self.redirect_uri, self.state = request
        self.error = error


def query_params(request: Request) -> dict[str, str]:
    """The query string's parameters; a repeated one is an error (RFC 6749 §3.1)."""
    params: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key in params:
            raise InvalidRequest(f"parameter {key[:64]} is repeated")
        params[key] = value
    return params


def _one_redirect_uri(client: ClientInfo, given: str | None) -> str:
    if given is None:
        if len(client.redirect_uris) != 1:
            raise PageError("redirect_uri is required: this client has several (or none)")
        return client.redirect_uris[0]
    if not any(accounts.redirect_uri_matches(r, given) for r in client.redirect_uris):
        raise PageError("the redirect_uri is not registered for this client")
    return given


async def check_request(srv: AppServer, params: dict[str, str]) -> AuthorizationRequest:
    """Check an authorization request; PageError or RedirectError when it is not good."""
    client_id = params.get("client_id")
    if not client_id:
        raise PageError("the request has no client_id")
    async with srv.db.begin() as conn:
        client = await accounts.get_client(conn, client_id)
    if client is None:
        raise PageError("no such client is registered here")
    given = params.get("redirect_uri")
    redirect_uri = _one_redirect_uri(client, given)
    state = params.get("state") or None
    if state is not None and len(state) > MAX_STATE:
        raise PageError("the state parameter is too long")
    target = (redirect_uri, state)
    if params.get("response_type") != "code":
        raise RedirectError(target, UnsupportedResponseType(
            "only response_type=code is supported"))
    if not client.allows(AUTHORIZATION_CODE):
        raise RedirectError(target, UnauthorizedClient(
            "this client may not use the authorization_code grant"))
    try:
        challenge = rfc7636.check_challenge(params.get("code_challenge"),
                                            params.get("code_challenge_method"))
    except InvalidRequest as exc:
        raise RedirectError(target, exc) from None
    scopes = params.get("scope", "").split()
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise RedirectError(target, InvalidScope(
            f"unknown scope {unknown[0][:64]!r}: use {', '.join(SCOPES)}"))
    nonce = params.get("nonce") or None
    if nonce is not None and len(nonce) > MAX_NONCE:
        raise RedirectError(target, InvalidRequest(f"nonce over {MAX_NONCE} characters"))
    for unsupported in ("request", "request_uri"):
        if unsupported in params:
            raise RedirectError(target, InvalidRequest(f"{unsupported} is not supported"))
    return AuthorizationRequest(
        client=client, redirect_uri=redirect_uri, redirect_given=given is not None,
        scope=" ".join(dict.fromkeys(scopes)), state=state, code_challenge=challenge,
        nonce=nonce, prompt=frozenset(params.get("prompt", "").split()),
        raw=urlencode(params))


def redirect(srv: AppServer, uri: str, params: dict[str, str | None], status: int) -> Response:
    """Send the browser to ``uri`` with ``params`` (and ``iss``, RFC 9207) added to its query."""
    query = urlencode({**{k: v for k, v in params.items() if v is not None},
                       "iss": srv.issuer})
    target = f"{uri}{'&' if urlsplit(uri).query else '?'}{query}"
    return RedirectResponse(target, status_code=status, headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


async def issue_code(srv: AppServer, req: AuthorizationRequest, who: SignedIn) -> str:
    """Store a new single-use code for ``req`` and ``who``; return it (never stored in clear)."""
    code = new_token("ia_ac")
    now = time.time()
    async with srv.db.begin() as conn:
        await conn.execute(authorization_codes.delete().where(
            authorization_codes.c.expires_at < now - KEEP_USED_CODES))
        await conn.execute(authorization_codes.insert().values(
            hash=token_hash(code), client_id=req.client.client_id, user_id=who.user.id,
            redirect_uri=req.redirect_uri, redirect_given=req.redirect_given, scope=req.scope,
            code_challenge=req.code_challenge, nonce=req.nonce, auth_time=who.auth_time,
            expires_at=now + srv.settings.authorization_code_ttl))
    return code


def _signin(page: Page, req: AuthorizationRequest, *, error: str = "", username: str = "",
            status: int = 200) -> Response:
    return page.render("signin.html", status=status, action="/oauth/authorize",
                       hidden={"request": req.raw}, client_name=req.client.name,
                       issuer=page.srv.issuer, error=error, username=username)


def _consent(page: Page, req: AuthorizationRequest, who: SignedIn) -> Response:
    return page.render("consent.html", action="/oauth/authorize", hidden={"request": req.raw},
                       client_name=req.client.name, username=who.user.username,
                       scopes=scope_words(req.scope or "interapp"),
                       redirect_host=urlsplit(req.redirect_uri).netloc
                       or req.redirect_uri.split(":", 1)[0],
                       leaves=True)


async def _step(page: Page, form: dict[str, str]) -> Response:
    """A post from one of the pages: sign in, sign out, or the consent decision."""
    page.check_post(form)
    params = dict(parse_qsl(form.get("request", ""), keep_blank_values=True))
    req = await check_request(page.srv, params)
    step = form.get("step")
    if step == "signin":
        username = form.get("username", "").strip()
        try:
            who = await page.sign_in(username, Secret(form.get("password", "")))
        except SlowDown as exc:
            minutes = max(1, round((exc.retry_after or 60) / 60))
            return _signin(page, req, username=username, status=429, error=(
                f"Too many failed sign-ins. Try again in about {minutes} minute(s)."))
        except InvalidGrant:
            return _signin(page, req, username=username, status=401,
                           error="Invalid username or password.")
        return _consent(page, req, who)
    if step == "signout":
        await page.sign_out()
        return _signin(page, req)
    if step != "consent":
        raise InvalidRequest("unknown form step")
    current = await page.signed_in()
    if current is None:  # the sign-in ended meanwhile
        return _signin(page, req, error="Your sign-in has ended: sign in again.")
    if form.get("decision") != "allow":
        raise RedirectError(req, AccessDenied("the user denied the request"))
    code = await issue_code(page.srv, req, current)
    return page.finish(redirect(page.srv, req.redirect_uri, {"code": code, "state": req.state},
                                303))


async def authorize_endpoint(request: Request) -> Response:
    """``GET``/``POST /oauth/authorize``."""
    srv: AppServer = request.app.state.server
    page = Page(srv, request)
    try:
        if request.method == "POST":
            form = await read_page_form(request)
            if "step" in form:
                return await _step(page, form)
            params = form  # an authorization request sent as a form (OIDC Core §3.1.2.1)
        else:
            params = query_params(request)
        req = await check_request(srv, params)
        who = None if "login" in req.prompt else await page.signed_in()
        if "none" in req.prompt:  # OIDC Core §3.1.2.1: answer without any page
            raise RedirectError(req, ConsentRequired("this application asks for consent "
                                                     "every time") if who else
                                LoginRequired("nobody is signed in on this browser"))
        return _consent(page, req, who) if who else _signin(page, req)
    except PageError as exc:
        return page.render("error.html", status=400, heading="This link cannot be used",
                           message=exc.message)
    except RedirectError as exc:
        return page.finish(redirect(srv, exc.redirect_uri, {
            "error": exc.error.code, "error_description": exc.error.message,
            "state": exc.state}, 303 if request.method == "POST" else 302))
    except InvalidRequest as exc:  # the form itself (CSRF, encoding): no client to tell
        return page.render("error.html", status=400, heading="This form cannot be used",
                           message=exc.message)
