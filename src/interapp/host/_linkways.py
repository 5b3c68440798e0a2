"""The driver's I/O for the browser and device link ways (the resolver's :class:`Authorize`).

Theory of operation
-------------------
**Browser** (RFC 8252 + RFC 7636 + RFC 9207): a one-shot :class:`~._loopback.Loopback`
listener on 127.0.0.1 (any port), a fresh random ``state``; the plug-in builds the sign-in URL
(:meth:`~interapp.plugins.contract.Plugin.begin_browser`: PKCE S256 for OAuth targets, the
``m.login.sso`` redirect for Matrix); the face opens it (``open_url`` with an
:class:`~interapp.host.prompts.OpenUrlRequest`). The answer — on the listener, or handed over
by the face with ``completion.deliver(url)`` — must carry the same ``state`` (compared in
constant time) and, when the plug-in names the issuer, ``iss`` equal to it (RFC 9207, a
mix-up defence); otherwise it is dropped as ``authorization_mismatch``. An ``error`` in the
answer (``access_denied`` …) ends the sign-in with that code; else the plug-in finishes it
(:meth:`~interapp.plugins.contract.Plugin.finish_browser`, which redeems the code with the
PKCE verifier and the same redirect URI). Nobody answering within :data:`BROWSER_TIMEOUT`
declines it.

**Device** (RFC 8628): the plug-in starts it; the face shows the code (``show_code``); the
host polls every ``interval`` seconds — ``authorization_pending``: again; ``slow_down``: 5 s
slower from then on (§3.5); ``expired_token``, ``access_denied``: the end, with that code. A
face's ``completion.cancel()`` stops the polling at once (declined).

Each outcome becomes a resolver event; nothing here writes the vault (the resolver's
``StoreLink``/``RepairLink`` do, on success only).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping

from interapp.errors import (
    AuthorizationPending,
    ConnectionLost,
    InterappError,
    PromptUnavailable,
    SlowDown,
    UnauthorizedClient,
    UnsupportedResponseType,
    WayUnavailable,
)
from interapp.host import resolver as r
from interapp.host._loopback import Loopback
from interapp.host.prompts import (
    LinkCompletion,
    OpenUrlRequest,
    Prompter,
    ShowCodeRequest,
)
from interapp.plugins.contract import BrowserStart, Login, Plugin, Profile

#: Seconds the host waits for the browser to come back before it gives up (declined).
BROWSER_TIMEOUT = 600.0
SLOW_DOWN_STEP = 5.0  # RFC 8628 §3.5
DEFAULT_INTERVAL = 5.0  # RFC 8628 §3.2

Outcome = tuple[r.Event, Profile | None]


def _failure(exc: InterappError) -> r.Event:
    """An error from the plug-in or the target as a resolver event."""
    if isinstance(exc, ConnectionLost):
        return r.TargetUnavailable(exc.message)
    return r.AuthorizationFailed(exc.code, exc.message)


def _not_started(exc: InterappError) -> r.Event:
    """An error starting a way: this host may not use it there (try another), or a failure."""
    if isinstance(exc, UnauthorizedClient | UnsupportedResponseType | WayUnavailable):
        return r.WayRefused(exc.message)
    return _failure(exc)


def _succeeded(login: Login) -> Outcome:
    profile = Profile(login.remote_account_id, login.remote_account_name,
                      login.remote_account_name)
    return r.LoginSucceeded(login.remote_account_id, login.remote_account_name,
                            login.credential), profile


def check_answer(answer: Mapping[str, str], state: str, start: BrowserStart) -> str | None:
    """Why the browser's answer must be dropped (``state`` or ``iss`` wrong), or None."""
    got = answer.get("state", "")
    if not secrets.compare_digest(got.encode(), state.encode()):
        return "the answer's state is not the one this sign-in sent (dropped: possible CSRF)"
    if start.issuer is not None:
        iss = answer.get("iss")
        if iss is None:
            return f"the answer has no iss, but {start.issuer} always sends it (RFC 9207)"
        if iss.rstrip("/") != start.issuer.rstrip("/"):
            return (f"the answer comes from {iss[:200]}, not {start.issuer} (RFC 9207: "
                    "dropped, possible mix-up attack)")
    return None


def _progress(prompter: Prompter, target: str, message: str) -> None:
    show = getattr(prompter, "link_progress", None)
    if callable(show):
        show(target, message)


async def browser(plugin: Plugin, prompter: Prompter, target: str, action: r.Authorize,
                  completion: LinkCompletion) -> Outcome:
    """Sign in through the browser (see the module docstring)."""
    open_url = getattr(prompter, "open_url", None)
    if not callable(open_url):
        return r.PromptUnavailable(), None
    async with Loopback(completion.deliver) as listener:
        state = secrets.token_urlsafe(24)
        try:
            start = await plugin.begin_browser(listener.redirect_uri, state)
        except InterappError as exc:
            return _not_started(exc), None
        request = OpenUrlRequest(target, start.url, start.redirect_uri, action.reason,
                                 completion, action.expected_account, action.reason_code,
                                 action.cause, action.way_reason)
        try:
            opened = await open_url(request)
        except PromptUnavailable:
            return r.PromptUnavailable(), None
        if opened is False:
            return r.PromptDeclined(), None
        try:
            answer = await asyncio.wait_for(completion.answer(), BROWSER_TIMEOUT)
        except TimeoutError:
            return r.PromptDeclined(), None
    if answer is None:
        return r.PromptDeclined(), None
    problem = check_answer(answer, state, start)
    if problem is not None:
        return r.AuthorizationFailed("authorization_mismatch", problem), None
    if answer.get("error"):
        code = answer["error"][:64]
        return r.AuthorizationFailed(code, answer.get("error_description", code)[:300]), None
    try:
        return _succeeded(await plugin.finish_browser(start, answer))
    except InterappError as exc:
        return _failure(exc), None


async def device(plugin: Plugin, prompter: Prompter, target: str, action: r.Authorize,
                 completion: LinkCompletion) -> Outcome:
    """Sign in with a device code (see the module docstring)."""
    show_code = getattr(prompter, "show_code", None)
    if not callable(show_code):
        return r.PromptUnavailable(), None
    try:
        start = await plugin.begin_device()
    except InterappError as exc:
        return _not_started(exc), None
    request = ShowCodeRequest(target, start.user_code, start.verification_uri,
                              start.verification_uri_complete, start.expires_in,
                              action.reason, completion, action.expected_account,
                              action.reason_code, action.cause, action.way_reason)
    try:
        await show_code(request)
    except PromptUnavailable:
        return r.PromptUnavailable(), None
    interval = start.interval if start.interval > 0 else DEFAULT_INTERVAL
    deadline = time.monotonic() + start.expires_in
    _progress(prompter, target, f"waiting for the code to be entered and allowed (checking "
                                f"every {interval:g} s)")
    while True:
        try:
            if await asyncio.wait_for(completion.answer(), interval) is None:
                return r.PromptDeclined(), None  # the face cancelled
            await asyncio.sleep(interval)  # a delivered URL means nothing to a device
        except TimeoutError:
            pass
        try:
            return _succeeded(await plugin.poll_device(start))
        except AuthorizationPending:
            if time.monotonic() > deadline + interval:
                return r.AuthorizationFailed("expired_token", "the code has expired"), None
        except SlowDown:
            interval += SLOW_DOWN_STEP
            _progress(prompter, target, f"{target} asked to poll more slowly: checking every "
                                        f"{interval:g} s")
        except InterappError as exc:
            return _failure(exc), None
