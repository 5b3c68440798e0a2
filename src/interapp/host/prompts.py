"""Prompts: the host asks for the opposite account's information; a face answers.

Theory of operation: the driver publishes a request to a :class:`Prompter`, one typed request
per link way (see :mod:`interapp.plugins.linkways`):

* ``fields`` — :class:`PromptRequest` (the target, the fields the plug-in declares, why it
  asks, which attempt) to :meth:`Prompter.ask`: the password way;
* ``open_url`` — :class:`OpenUrlRequest` to ``open_url``: the browser way; the face opens
  ``url`` (the target's own sign-in page) in a browser or a new window; the answer comes
  back to the host's loopback listener by itself (or the face hands it over with
  ``request.completion.deliver(url)``);
* ``show_code`` — :class:`ShowCodeRequest` to ``show_code``: the device way; the face shows
  the code and the URL where to type it, while the host polls.

``open_url`` and ``show_code`` are optional: a prompter without them only offers the password
way (so ``--password-stdin`` always means the password). Faces implement them: the terminal
(password not echoed, the system browser, the code on stderr), scripted answers
(``--username`` + ``--password-stdin``, or the demo's ``--yes``), the web UI. A prompter that
cannot answer raises :class:`~interapp.errors.PromptUnavailable` at once: nothing ever waits
for a face that is not there. Both link-way requests carry a :class:`LinkCompletion`: a face
awaits it to close its window when the link is made (or failed), and may cancel it.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol
from urllib.parse import parse_qsl, urlsplit

import anyio

from interapp.errors import PromptUnavailable
from interapp.host.resolver import PromptReason, WayReason
from interapp.plugins.contract import LinkWay, PromptField
from interapp.secret import Secret

#: What a :class:`Prompter` answers: a value per field name; secret fields as :class:`Secret`.
Answers = Mapping[str, Secret | str]


@dataclass(frozen=True)
class PromptRequest:
    """What the host needs to know from the user, to sign in to ``target``.

    * ``fields`` — what to ask for, in order: each has a ``name`` (the key of the answer), a
      ``label`` to show, and ``secret`` (don't echo it, answer with a :class:`Secret`);
    * ``reason_code`` — why (:class:`~interapp.host.resolver.PromptReason`: ``no_link``,
      ``reauth``, ``retry``) and ``reason``, the same in words (no face's commands in it);
      ``cause`` — what the target said when it refused the stored link or the last answer;
    * ``attempt`` of ``max_attempts``;
    * ``expected_account`` — on re-authentication, the remote account the link is for (a
      sign-in as anyone else is refused, so a dialog may pre-fill it).
    """

    target: str
    fields: tuple[PromptField, ...]
    reason: str
    attempt: int
    max_attempts: int
    expected_account: str | None = None
    reason_code: PromptReason = PromptReason.NO_LINK
    cause: str = ""
    kind: ClassVar[str] = "fields"


class LinkCompletion:
    """How a browser or device sign-in ends, shared by the host and the face.

    The face may :meth:`deliver` the URL the browser came back to (when the face, not the
    host's loopback listener, received it), :meth:`cancel` (the user closed the window or
    pressed Cancel), and ``await`` :meth:`wait` — True once the link is made, False when the
    sign-in failed or was cancelled — to close its window.
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self._answer: asyncio.Future[Mapping[str, str] | None] = loop.create_future()
        self._finished: asyncio.Future[bool] = loop.create_future()

    def __repr__(self) -> str:
        return f"LinkCompletion(answered={self._answer.done()}, done={self._finished.done()})"

    def deliver(self, callback_url: str) -> None:
        """The URL the browser was sent back to (its query carries the answer)."""
        if not self._answer.done():
            params = dict(parse_qsl(urlsplit(callback_url).query, keep_blank_values=True))
            self._answer.set_result(params)

    def cancel(self) -> None:
        """The user gave up: the sign-in is declined, nothing is stored."""
        if not self._answer.done():
            self._answer.set_result(None)

    @property
    def answered(self) -> bool:
        """Whether the answer (or a cancel) arrived."""
        return self._answer.done()

    async def answer(self) -> Mapping[str, str] | None:
        """(The host) the answer's query parameters, None when cancelled."""
        return await asyncio.shield(self._answer)

    def finish(self, linked: bool) -> None:
        """(The host) the sign-in is over."""
        if not self._answer.done():
            self._answer.set_result(None)
        if not self._finished.done():
            self._finished.set_result(linked)

    async def wait(self) -> bool:
        """(A face) wait until the sign-in is over: True when the link was made."""
        return await asyncio.shield(self._finished)


@dataclass(frozen=True)
class OpenUrlRequest:
    """The browser way: open ``url``, the target's own sign-in page, to link ``target``.

    ``redirect_uri`` is where the page sends the browser back (the host's one-shot loopback
    listener, RFC 8252); ``completion`` ends it (see :class:`LinkCompletion`). ``reason``,
    ``reason_code``, ``cause`` and ``expected_account`` are as for :class:`PromptRequest`;
    ``way_reason`` says why the browser way was chosen.
    """

    target: str
    url: str
    redirect_uri: str
    reason: str
    completion: LinkCompletion = field(compare=False)
    expected_account: str | None = None
    reason_code: PromptReason = PromptReason.NO_LINK
    cause: str = ""
    way_reason: WayReason = WayReason.MOST_SECURE
    kind: ClassVar[str] = "open_url"


@dataclass(frozen=True)
class ShowCodeRequest:
    """The device way (RFC 8628): show ``user_code`` and ``verification_uri`` (where to type
    it, on any device; ``verification_uri_complete`` has the code in it already) while the
    host polls for ``expires_in`` seconds. ``completion`` ends it (the face may cancel).
    """

    target: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    reason: str
    completion: LinkCompletion = field(compare=False)
    expected_account: str | None = None
    reason_code: PromptReason = PromptReason.NO_LINK
    cause: str = ""
    way_reason: WayReason = WayReason.MOST_SECURE
    kind: ClassVar[str] = "show_code"


def has_display(env: Mapping[str, str] | None = None) -> bool:
    """Whether a browser can be opened here: macOS and Windows always; elsewhere when
    ``DISPLAY`` or ``WAYLAND_DISPLAY`` is set (so not in a console or a plain SSH session)."""
    env = os.environ if env is None else env
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def face_ways(prompter: object) -> tuple[LinkWay, ...]:
    """The link ways ``prompter`` can do: ``password`` always (``ask``), ``browser`` with an
    ``open_url`` method, ``device`` with a ``show_code`` method."""
    ways = [LinkWay.PASSWORD]
    if callable(getattr(prompter, "open_url", None)):
        ways.insert(0, LinkWay.BROWSER)
    if callable(getattr(prompter, "show_code", None)):
        ways.insert(-1, LinkWay.DEVICE)
    return tuple(ways)


class Prompter(Protocol):
    """Your application's dialog for the claim-1 prompt.

    ``ask`` shows ``request`` to the user and returns the answers (a value for every field),
    or None when the user declines. When nobody can answer (no window, a headless run) it
    raises :class:`~interapp.errors.PromptUnavailable` at once rather than wait. ``interactive``
    is True when a person answers, so a refused answer may be asked again.

    Optionally (see the module docstring) ``async open_url(request: OpenUrlRequest) -> bool``
    (False: the user declined) and ``async show_code(request: ShowCodeRequest) -> None``
    offer the browser and device ways, ``link_progress(target, message)`` shows how a device
    sign-in goes, and a ``headless`` attribute (True: no browser here) makes the device way
    the default.
    """

    @property
    def interactive(self) -> bool:
        """True when a person answers (so a wrong answer may be retried)."""

    async def ask(self, request: PromptRequest) -> Answers | None:
        """The answers, None when the user declines; PromptUnavailable when nobody can answer."""


class NoInput:
    """No face: every prompt is unavailable (``--no-input``, no terminal)."""

    interactive = False

    async def ask(self, request: PromptRequest) -> Answers | None:
        """Always unavailable."""
        raise PromptUnavailable("no way to ask for the account information")


class Scripted:
    """Answers given up front (``--username`` with ``--password-stdin``, or the demo)."""

    interactive = False

    def __init__(self, answers: Mapping[str, str]) -> None:
        self._answers = {k: Secret(v) for k, v in answers.items()}
        self.asked = 0

    async def ask(self, request: PromptRequest) -> Answers | None:
        """The scripted answers, once per missing field set."""
        self.asked += 1
        missing = [f.label for f in request.fields if f.name not in self._answers]
        if missing:
            raise PromptUnavailable(f"no answer given for {', '.join(missing)}")
        return {f.name: (self._answers[f.name] if f.secret else self._answers[f.name].reveal())
                for f in request.fields}


def _print(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _minutes(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))} min" if seconds >= 90 else f"{int(seconds)} s"


class Messages:
    """No one can type, but messages can be shown (standard error): the browser and device
    ways work, the password way is unavailable. ``interapp connect --via browser|device``
    without a terminal."""

    interactive = False

    def __init__(self, opener: Callable[[str], bool] | None = None,
                 *, headless: bool | None = None) -> None:
        self._opener = opener or webbrowser.open
        self.headless = (not has_display()) if headless is None else headless

    async def ask(self, request: PromptRequest) -> Answers | None:
        """Unavailable: nobody can type here."""
        raise PromptUnavailable("no terminal to type the account information on")

    async def open_url(self, request: OpenUrlRequest) -> bool:
        """Open the system browser at the sign-in page (and print the URL, in case)."""
        _print(f"{request.target}: {request.reason}.\nSign in in your browser; if it did not "
               f"open, visit:\n  {request.url}")
        if self.headless and self._opener is webbrowser.open and not os.environ.get("BROWSER"):
            # no display: webbrowser would start a console browser (lynx, w3m) over this
            # terminal; $BROWSER, when set, says which browser the user wants
            _print("(no display here: open the address above in a browser on this machine)")
            return True
        opened = await anyio.to_thread.run_sync(self._opener, request.url)
        if not opened:
            _print("(no browser could be opened here: open the address above yourself)")
        return True

    async def show_code(self, request: ShowCodeRequest) -> None:
        """Print the code and where to type it."""
        where = request.verification_uri_complete or request.verification_uri
        _print(f"{request.target}: {request.reason}.\nOn any device, visit "
               f"{request.verification_uri}\nand enter the code:  {request.user_code}\n"
               f"(or open {where}; the code expires in {_minutes(request.expires_in)})")

    def link_progress(self, target: str, message: str) -> None:
        """Print how the device sign-in goes."""
        _print(f"{target}: {message}")


class Terminal:
    """Asks on the controlling terminal; secrets are not echoed. The browser way opens the
    system browser (``opener``, default :func:`webbrowser.open`); the device way prints the
    code."""

    interactive = True

    def __init__(self, preset: Mapping[str, str] | None = None, *,
                 opener: Callable[[str], bool] | None = None,
                 headless: bool | None = None) -> None:
        self._preset = dict(preset or {})
        self._messages = Messages(opener, headless=headless)
        self.headless = self._messages.headless

    async def open_url(self, request: OpenUrlRequest) -> bool:
        """Open the system browser at the sign-in page (and print the URL)."""
        return await self._messages.open_url(request)

    async def show_code(self, request: ShowCodeRequest) -> None:
        """Print the code and where to type it."""
        await self._messages.show_code(request)

    def link_progress(self, target: str, message: str) -> None:
        """Print how the device sign-in goes."""
        self._messages.link_progress(target, message)

    @staticmethod
    def available() -> bool:
        """True when standard input and output are a terminal."""
        return sys.stdin is not None and sys.stdin.isatty() and sys.stderr.isatty()

    def _ask_sync(self, request: PromptRequest) -> Answers | None:
        out = sys.stderr
        out.write(f"\n{request.target}: {request.reason}\n")
        if request.attempt > 1:
            out.write(f"(attempt {request.attempt} of {request.max_attempts})\n")
        answers: dict[str, Secret | str] = {}
        try:
            for f in request.fields:
                if f.name in self._preset and request.attempt == 1:
                    answers[f.name] = Secret(self._preset[f.name]) if f.secret else \
                        self._preset[f.name]
                elif f.secret:
                    answers[f.name] = Secret(getpass.getpass(f"{f.label}: ", stream=out))
                else:
                    default = request.expected_account
                    hint = f" [{default}]" if default else ""
                    out.write(f"{f.label}{hint}: ")
                    out.flush()
                    line = sys.stdin.readline()
                    if not line:
                        return None
                    answers[f.name] = line.strip() or (default or "")
        except (EOFError, KeyboardInterrupt):
            return None
        if any(not (v.reveal() if isinstance(v, Secret) else v) for v in answers.values()):
            return None
        return answers

    async def ask(self, request: PromptRequest) -> Answers | None:
        """Ask in a worker thread so the event loop keeps running."""
        if not self.available():
            raise PromptUnavailable("no terminal to ask on")
        result: Answers | None = await anyio.to_thread.run_sync(self._ask_sync, request)
        return result
