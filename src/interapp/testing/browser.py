"""A scripted person at a browser, for the browser and device link ways in tests and the kit.

Theory of operation: :class:`FormBrowser` is a user agent (httpx, a cookie jar, the standard
library's HTML parser) that follows redirects across servers one hop at a time and fills in
the interapp server's pages exactly as a browser posts them — the sign-in form, the consent
form (allow or deny) and the ``/device`` code form — so a browser sign-in really goes through
the target's authorization endpoint, any relying party in between (Synapse's SSO redirect and
OIDC callback), and ends with a real ``GET`` on the host's loopback listener. Hooks let a
test change what a real attacker or a broken page would: the authorization URL before it is
opened (``tamper_url``) and the answer on its way back to the host (``tamper_answer``).

:class:`BrowserUser` is a :class:`~interapp.host.Prompter` for the host: ``open_url`` and
``show_code`` hand the page (or the code) to a :class:`FormBrowser`, as a person would; it
offers no password prompt. The real-Chromium version of the same drive is in the test suite
(Playwright).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from interapp.host import (
    Answers,
    OpenUrlRequest,
    PromptRequest,
    PromptUnavailable,
    ShowCodeRequest,
)

MAX_HOPS = 30


@dataclass
class Form:
    """One ``<form>`` of a page: where it posts and the fields a browser would send."""

    id: str
    action: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (name, value)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("id", ""), a.get("action", "")))
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1].fields[a["name"]] = a.get("value", "")
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1].buttons[a.get("id", "")] = (a["name"], a.get("value", ""))


def forms(html: str) -> dict[str, Form]:
    """The forms of a page, by id."""
    parser = _Forms()
    parser.feed(html)
    return {f.id: f for f in parser.forms}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class FormBrowser:
    """A user agent that signs in as ``username`` and allows (or denies) — see the module."""

    def __init__(self, username: str, password: str, *, decision: str = "allow",
                 tamper_url: Callable[[str], str] | None = None,
                 tamper_answer: Callable[[str], str] | None = None,
                 answer_prefix: str = "http://127.0.0.1:") -> None:
        self.username = username
        self.password = password
        self.decision = decision
        self.tamper_url = tamper_url
        self.tamper_answer = tamper_answer
        self.answer_prefix = answer_prefix
        self.visited: list[str] = []
        self.answers: list[str] = []  # the loopback URLs the browser was sent back to
        self.last_page = ""
        self.http = httpx.AsyncClient(timeout=20, follow_redirects=False)

    async def aclose(self) -> None:
        """Close the connections."""
        await self.http.aclose()

    def _loopback_is_secure(self) -> None:
        """Like browsers, treat http://127.0.0.1 and localhost as a secure context: their
        ``Secure`` cookies (Synapse's SSO session cookie) are sent back over plain http."""
        for cookie in self.http.cookies.jar:
            if cookie.secure and cookie.domain.lstrip(".") in ("127.0.0.1", "localhost",
                                                               "localhost.local"):
                cookie.secure = False

    async def _follow(self, resp: httpx.Response) -> httpx.Response:
        for _ in range(MAX_HOPS):
            self._loopback_is_secure()
            if resp.status_code not in (301, 302, 303, 307, 308):
                return resp
            location = urljoin(str(resp.url), resp.headers["location"])
            if location.startswith(self.answer_prefix):
                if self.tamper_answer is not None:
                    location = self.tamper_answer(location)
                self.answers.append(location)
            self.visited.append(location)
            resp = await self.http.get(location)
        raise AssertionError(f"more than {MAX_HOPS} redirects: {self.visited[-5:]}")

    async def _submit(self, page: httpx.Response, form: Form, button: str | None = None,
                      **values: str) -> httpx.Response:
        data = {**form.fields, **values}
        if button is not None:
            name, value = form.buttons[button]
            data[name] = value
        url = urljoin(str(page.url), form.action)
        resp = await self.http.post(url, data=data, headers={"Origin": _origin(str(page.url))})
        return await self._follow(resp)

    async def _fill(self, page: httpx.Response, *, user_code: str = "") -> httpx.Response:
        """Answer the interapp pages until the browser lands elsewhere."""
        for _ in range(10):
            self.last_page = page.text
            found = forms(page.text) if "text/html" in page.headers.get("content-type", "") \
                else {}
            if "device-form" in found and user_code:
                page = await self._submit(page, found["device-form"], user_code=user_code)
                user_code = ""
            elif "signin-form" in found:
                page = await self._submit(page, found["signin-form"], username=self.username,
                                          password=self.password)
                if page.status_code != 200:
                    return page
            elif "consent-form" in found:
                page = await self._submit(page, found["consent-form"],
                                          button=f"consent-{self.decision}")
            else:
                return page
        return page

    async def authorize(self, url: str) -> httpx.Response:
        """Open ``url`` (a sign-in page, or a relying party's redirect to one) and go through
        sign-in and consent; the last page."""
        if self.tamper_url is not None:
            url = self.tamper_url(url)
        self.visited.append(url)
        return await self._fill(await self._follow(await self.http.get(url)))

    async def enter_code(self, verification_uri: str, user_code: str) -> httpx.Response:
        """Open the device page, type ``user_code``, sign in, decide; the last page."""
        self.visited.append(verification_uri)
        page = await self._follow(await self.http.get(verification_uri))
        return await self._fill(page, user_code=user_code)


class BrowserUser:
    """A :class:`~interapp.host.Prompter` whose person uses a :class:`FormBrowser`.

    ``headless`` makes the device way the host's default (as on a console).
    """

    interactive = True

    def __init__(self, browser: FormBrowser, *, headless: bool = False,
                 decline: bool = False) -> None:
        self.browser = browser
        self.headless = headless
        self.decline = decline
        self.opened: list[OpenUrlRequest] = []
        self.codes: list[ShowCodeRequest] = []
        self.progress: list[str] = []
        self._tasks: set[asyncio.Task[httpx.Response]] = set()

    def _start(self, work: Coroutine[Any, Any, httpx.Response]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ask(self, request: PromptRequest) -> Answers | None:
        """This person does not type passwords into the application."""
        raise PromptUnavailable("the browser user types no password here")

    async def open_url(self, request: OpenUrlRequest) -> bool:
        """Open the page in the browser (unless told to decline)."""
        self.opened.append(request)
        if self.decline:
            return False
        self._start(self._browse(request))
        return True

    async def _browse(self, request: OpenUrlRequest) -> httpx.Response:
        page = await self.browser.authorize(request.url)
        if not request.completion.answered:  # the browser ended elsewhere: the person closes
            request.completion.cancel()       # the window, as the face's Cancel would
        return page

    async def show_code(self, request: ShowCodeRequest) -> None:
        """Read the code off the screen and type it on the device page."""
        self.codes.append(request)
        self._start(self.browser.enter_code(request.verification_uri, request.user_code))

    def link_progress(self, target: str, message: str) -> None:
        """Keep what the host said while polling."""
        self.progress.append(message)

    async def settle(self) -> None:
        """Wait for the browser's work (and surface its errors)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks))


def main(argv: list[str] | None = None) -> int:
    """``python -m interapp.testing.browser URL``: sign in and allow, as a system browser would
    (``BROWSER="python -m interapp.testing.browser %s"`` makes :func:`webbrowser.open` run it).
    The account comes from ``INTERAPP_TEST_BROWSER_USER`` and ``…_PASSWORD``; ``…_DECISION``
    is ``allow`` (default) or ``deny``."""
    import os
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m interapp.testing.browser URL\n")
        return 2
    browser = FormBrowser(os.environ["INTERAPP_TEST_BROWSER_USER"],
                          os.environ["INTERAPP_TEST_BROWSER_PASSWORD"],
                          decision=os.environ.get("INTERAPP_TEST_BROWSER_DECISION", "allow"))

    async def go() -> int:
        try:
            page = await browser.authorize(args[0])
        finally:
            await browser.aclose()
        return 0 if page.status_code == 200 else 1

    return asyncio.run(go())


if __name__ == "__main__":
    raise SystemExit(main())
