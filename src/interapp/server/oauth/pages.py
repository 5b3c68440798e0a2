"""What the server-rendered authorization pages share: rendering, headers, CSRF, the sign-in.

Theory of operation: the sign-in, consent and device pages are plain HTML forms (Jinja2,
autoescaped, no script) that post back to the endpoint that rendered them.

* **Headers.** Every page carries ``Content-Security-Policy`` with ``frame-ancestors 'none'``
  (and ``X-Frame-Options: DENY``: no clickjacking of the consent button), ``default-src 'none'``
  with the stylesheet from this server only, ``form-action 'self'`` (not on the consent page:
  see :func:`security_headers`), ``Referrer-Policy: same-origin`` (the
  authorization request never leaks to another site through ``Referer``; ``no-referrer``
  would make browsers send ``Origin: null`` on the pages' own posts) and
  ``Cache-Control: no-store``.
* **CSRF.** A random ``interapp_csrf`` cookie (``HttpOnly``, ``SameSite=Lax``) is set with the
  first page; every form carries ``HMAC(app secret, cookie)``, and a post is accepted only when
  the two agree — and, when the browser sends ``Origin``, only from this server's origin. A
  forged cross-site post has neither the cookie's value nor the key to sign it.
* **Sign-in.** The password is checked exactly as the token endpoint's password grant does:
  the same limiter and keys (``acct:USER``, ``addr:ADDRESS``; locked → refused before the
  password is even checked), one argon2 verification whether or not the account exists, and
  one message for every failure ("invalid username or password"), so the page tells no one
  which accounts exist. A success opens a *sign-in session*: a random cookie
  (``interapp_session``), stored only as its SHA-256 in ``browser_sessions``, so that several
  server processes share it; it lasts ``signin_session_ttl`` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from interapp.errors import InvalidRequest
from interapp.secret import Secret, constant_time_equals
from interapp.server import accounts
from interapp.server.accounts import User
from interapp.server.core import AppServer
from interapp.server.oauth.base import FORM, check_password, client_address, read_form
from interapp.server.storage.schema import browser_sessions
from interapp.server.tokens import token_hash

TEMPLATES = Path(__file__).parent / "templates"
CSRF_COOKIE = "interapp_csrf"
SESSION_COOKIE = "interapp_session"
CSRF_FIELD = "csrf"
STYLESHEET = "/oauth/pages.css"
#: What each scope lets the client do, in the words the consent page uses.
SCOPE_WORDS = {
    "openid": "confirm who you are on this application",
    "profile": "see your username and display name",
    "interapp": "use your account: buddies, presence and messages",
}

# Templates and stylesheet are read once, here: no file I/O on the event loop afterwards.
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                          undefined=jinja2.StrictUndefined, auto_reload=False)
_PAGES = {name: _ENV.get_template(name) for name in _ENV.list_templates(extensions=["html"])}
_CSS = (TEMPLATES / "pages.css").read_text(encoding="utf-8")


@dataclass(frozen=True)
class SignedIn:
    """The account signed in on this browser, and when it signed in (OIDC ``auth_time``)."""

    user: User
    auth_time: float


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def security_headers(srv: AppServer, *, leaves: bool = False) -> dict[str, str]:
    """The headers of every page. ``leaves``: a form of this page ends at the client.

    Such a page (the consent page) gets no ``form-action``: browsers apply it to the whole
    redirect chain after the post, and the client's own next redirect (Synapse's callback sends
    the browser on to the Matrix client) cannot be known here. Every other page has
    ``form-action 'self'``.
    """
    actions = "" if leaves else "form-action 'self'; "
    csp = (f"default-src 'none'; style-src 'self'; img-src 'self'; {actions}"
           "frame-ancestors 'none'; base-uri 'none'")
    return {"Content-Security-Policy": csp, "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store", "Pragma": "no-cache"}


def _secure(srv: AppServer) -> str:
    return "; Secure" if srv.issuer.startswith("https://") else ""


def csrf_key(srv: AppServer) -> bytes:
    """The key that signs CSRF tokens, derived from the app's token-derivation secret."""
    return hmac.new(srv.derivation_secret, b"interapp oauth pages csrf", hashlib.sha256).digest()


def csrf_token(srv: AppServer, cookie: str) -> str:
    """The form token that goes with the ``interapp_csrf`` cookie value ``cookie``."""
    return hmac.new(csrf_key(srv), cookie.encode(), hashlib.sha256).hexdigest()


class Page:
    """One page being answered: the request, its CSRF cookie, and the cookies to set."""

    def __init__(self, srv: AppServer, request: Request) -> None:
        self.srv, self.request = srv, request
        cookie = request.cookies.get(CSRF_COOKIE, "")
        self._new_cookie = not (20 <= len(cookie) <= 64 and cookie.isalnum())
        self.csrf_cookie = secrets.token_hex(16) if self._new_cookie else cookie
        self.set_cookies: list[str] = []

    @property
    def csrf(self) -> str:
        """The token every form of this page carries."""
        return csrf_token(self.srv, self.csrf_cookie)

    def render(self, template: str, *, status: int = 200, leaves: bool = False,
               **context: Any) -> Response:
        """Render ``template`` with the page's CSRF token and the security headers."""
        html = _PAGES[template].render(
            csrf=self.csrf, csrf_field=CSRF_FIELD, stylesheet=STYLESHEET,
            app=self.srv.settings.app, **context)
        return self.finish(HTMLResponse(html, status_code=status), leaves=leaves)

    def finish(self, response: Response, *, leaves: bool = False) -> Response:
        """Add the security headers and the cookies this page sets."""
        for name, value in security_headers(self.srv, leaves=leaves).items():
            response.headers[name] = value
        if self._new_cookie:
            self.set_cookies.append(f"{CSRF_COOKIE}={self.csrf_cookie}; Path=/; HttpOnly; "
                                    f"SameSite=Lax{_secure(self.srv)}")
        for cookie in self.set_cookies:
            response.headers.append("Set-Cookie", cookie)
        return response

    def check_post(self, form: dict[str, str]) -> None:
        """Refuse a post without this browser's CSRF token or from another origin."""
        origin = self.request.headers.get("origin")
        if origin is not None and origin != _origin(self.srv.issuer) and \
                origin != _origin(str(self.request.base_url)):
            raise InvalidRequest("this form was posted from another site")
        offered = form.get(CSRF_FIELD, "")
        if self._new_cookie or not constant_time_equals(offered, self.csrf):
            raise InvalidRequest("the form has expired or was not sent by this browser: "
                                 "reload the page and try again")

    # --- the sign-in session ---------------------------------------------------------------

    async def signed_in(self) -> SignedIn | None:
        """The account signed in on this browser, if its session is live."""
        value = self.request.cookies.get(SESSION_COOKIE)
        if not value or len(value) > 128:
            return None
        async with self.srv.db.begin() as conn:
            row = (await conn.execute(sa.select(browser_sessions.c.user_id,
                                                browser_sessions.c.auth_time)
                                      .where(browser_sessions.c.hash == token_hash(value),
                                             browser_sessions.c.expires_at > time.time())
                                      )).first()
            user = await accounts.get_user(conn, row.user_id) if row else None
        return SignedIn(user, float(row.auth_time)) if row and user else None

    async def sign_in(self, username: str, password: Secret) -> SignedIn:
        """Check the password (see the module's notes) and open a sign-in session."""
        user = await check_password(self.srv, username, password, client_address(self.request))
        value = secrets.token_urlsafe(32)
        now = time.time()
        async with self.srv.db.begin() as conn:
            await conn.execute(browser_sessions.delete().where(
                browser_sessions.c.expires_at < now))
            old = self.request.cookies.get(SESSION_COOKIE)
            if old:  # never keep a session id the browser had before signing in
                await conn.execute(browser_sessions.delete().where(
                    browser_sessions.c.hash == token_hash(old)))
            await conn.execute(browser_sessions.insert().values(
                hash=token_hash(value), user_id=user.id, auth_time=now,
                expires_at=now + self.srv.settings.signin_session_ttl))
        self.set_cookies.append(f"{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; "
                                f"Max-Age={self.srv.settings.signin_session_ttl}"
                                f"{_secure(self.srv)}")
        return SignedIn(user, now)

    async def sign_out(self) -> None:
        """End this browser's sign-in session."""
        value = self.request.cookies.get(SESSION_COOKIE)
        if value:
            async with self.srv.db.begin() as conn:
                await conn.execute(browser_sessions.delete().where(
                    browser_sessions.c.hash == token_hash(value)))
        self.set_cookies.append(f"{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; "
                                f"Max-Age=0{_secure(self.srv)}")


async def read_page_form(request: Request) -> dict[str, str]:
    """A page's form body (strict: no repeated fields, no NUL)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM:
        raise InvalidRequest(f"the body must be {FORM}")
    return await read_form(request)


def scope_words(scope: str) -> list[str]:
    """What a scope string lets the client do, one line per scope, for the consent page."""
    return [SCOPE_WORDS[s] for s in scope.split() if s in SCOPE_WORDS]


def stylesheet() -> Response:
    """``GET /oauth/pages.css``: the pages' only stylesheet."""
    return Response(_CSS, media_type="text/css", headers={
        "Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})
