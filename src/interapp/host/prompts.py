"""Prompts: the host asks for the opposite account's information; a face answers.

Theory of operation: the driver publishes a :class:`PromptRequest` (the target, the fields the
plug-in declares, why it asks, which attempt) to a :class:`Prompter`. Faces implement it: the
terminal (password not echoed), scripted answers (``--username`` + ``--password-stdin``, or the
demo's ``--yes``), the web UI. A prompter that cannot answer raises
:class:`~interapp.errors.PromptUnavailable` at once: nothing ever waits for a face that is not
there.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import anyio

from interapp.errors import PromptUnavailable
from interapp.host.resolver import PromptReason
from interapp.plugins.contract import PromptField
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


class Prompter(Protocol):
    """Your application's dialog for the claim-1 prompt.

    ``ask`` shows ``request`` to the user and returns the answers (a value for every field),
    or None when the user declines. When nobody can answer (no window, a headless run) it
    raises :class:`~interapp.errors.PromptUnavailable` at once rather than wait. ``interactive``
    is True when a person answers, so a refused answer may be asked again.
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


class Terminal:
    """Asks on the controlling terminal; secrets are not echoed."""

    interactive = True

    def __init__(self, preset: Mapping[str, str] | None = None) -> None:
        self._preset = dict(preset or {})

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
