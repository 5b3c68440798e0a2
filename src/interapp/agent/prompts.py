"""The agent's face for the claim-1 prompt: any attached client may answer it.

Theory of operation: :class:`AgentPrompter` is the :class:`~interapp.host.Prompter` of every
connect the agent makes — those a client asks for and those the agent makes on its own (a
stream that reconnects and finds its link refused). ``ask`` opens a :class:`PendingPrompt`
with a random id, tells the agent (which publishes a ``prompt`` event and wakes the client
waiting on that target's connect), and waits for ``POST /agent/v1/prompts/{id}``. Unlike the
terminal, it does not give up at once when nobody is attached: a client may attach later and
see the prompt in ``GET /agent/v1/state``; after ``timeout`` seconds the prompt is declined.

The browser and device link ways are prompts too, with a ``kind``: ``open_url`` (the client
opens ``url`` — the target's sign-in page — in a browser or a window on this machine, then
answers ``{"answers": {}}``, or ``{"answers": {"callback_url": URL}}`` when the window itself
came back to the redirect URI; ``{"decline": true}`` declines), and ``show_code`` (the client
shows ``user_code`` and ``verification_uri``; the agent polls meanwhile; answering
``{"answers": {}}`` waits for the outcome, declining cancels). The answer to the loopback
redirect arrives at the agent's own listener, as in any host.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from interapp.errors import ConfigError, NotFoundError
from interapp.host import Answers, OpenUrlRequest, PromptRequest, ShowCodeRequest
from interapp.secret import Secret

AnyRequest = PromptRequest | OpenUrlRequest | ShowCodeRequest

PROMPT_TIMEOUT = 300.0
MAX_ANSWER = 4096


@dataclass(eq=False)
class PendingPrompt:
    """A prompt waiting for a client's answers."""

    id: str
    request: AnyRequest
    future: asyncio.Future[Answers | None]

    @property
    def target(self) -> str:
        """The target that asks."""
        return self.request.target

    def describe(self) -> dict[str, Any]:
        """The prompt as the API shows it (no secret: a value only for the expected account)."""
        r = self.request
        if not isinstance(r, PromptRequest):
            out: dict[str, Any] = {
                "id": self.id, "kind": r.kind, "target": r.target, "reason": r.reason,
                "reason_code": str(r.reason_code), "cause": r.cause, "attempt": 1,
                "max_attempts": 1, "expected_account": r.expected_account, "fields": [],
                "way_reason": str(r.way_reason)}
            if isinstance(r, OpenUrlRequest):
                out.update(url=r.url, redirect_uri=r.redirect_uri)
            else:
                out.update(user_code=r.user_code, verification_uri=r.verification_uri,
                           verification_uri_complete=r.verification_uri_complete,
                           expires_in=r.expires_in)
            return out
        return {"id": self.id, "kind": r.kind, "target": r.target, "reason": r.reason,
                "reason_code": str(r.reason_code), "cause": r.cause, "attempt": r.attempt,
                "max_attempts": r.max_attempts, "expected_account": r.expected_account,
                "fields": [{"name": f.name, "label": f.label, "secret": f.secret,
                            "value": "" if f.secret else (r.expected_account or "")}
                           for f in r.fields]}


class AgentPrompter:
    """Prompts answered by whichever client is attached (see the module docstring)."""

    interactive = True

    def __init__(self, *, timeout: float = PROMPT_TIMEOUT,
                 opened: Callable[[PendingPrompt], None] | None = None,
                 closed: Callable[[PendingPrompt, str], None] | None = None) -> None:
        self.timeout = timeout
        self.opened = opened
        self.closed = closed
        self.pending: dict[str, PendingPrompt] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    async def open_url(self, request: OpenUrlRequest) -> bool:
        """The browser way: a client opens the page; False when it declines (or nobody
        answers in time). A ``callback_url`` in the answer is handed to the host."""
        answers = await self._wait(request)
        if answers is None:
            return False
        callback = answers.get("callback_url")
        if isinstance(callback, str) and callback:
            request.completion.deliver(callback)
        return True

    async def show_code(self, request: ShowCodeRequest) -> None:
        """The device way: publish the code; the prompt stays open (a client may wait on it
        or cancel it) until the sign-in ends."""
        future: asyncio.Future[Answers | None] = asyncio.get_running_loop().create_future()
        prompt = PendingPrompt(secrets.token_urlsafe(12), request, future)
        self.pending[prompt.id] = prompt
        if self.opened is not None:
            self.opened(prompt)

        def answered(done: asyncio.Future[Answers | None]) -> None:
            if not done.cancelled() and done.result() is None:
                request.completion.cancel()

        async def until_over() -> None:
            outcome = "answered"
            try:
                outcome = "answered" if await request.completion.wait() else "declined"
            finally:
                self.pending.pop(prompt.id, None)
                if not future.done():
                    future.cancel()
                if self.closed is not None:
                    self.closed(prompt, outcome)

        future.add_done_callback(answered)
        task = asyncio.ensure_future(until_over())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def ask(self, request: PromptRequest) -> Answers | None:
        """Publish the prompt and wait (bounded) for a client's answers; None: declined."""
        return await self._wait(request)

    async def _wait(self, request: AnyRequest) -> Answers | None:
        future: asyncio.Future[Answers | None] = asyncio.get_running_loop().create_future()
        prompt = PendingPrompt(secrets.token_urlsafe(12), request, future)
        self.pending[prompt.id] = prompt
        if self.opened is not None:
            self.opened(prompt)
        outcome = "declined"
        try:
            answers = await asyncio.wait_for(future, self.timeout)
            outcome = "answered" if answers is not None else "declined"
            return answers
        except TimeoutError:
            outcome = "timed_out"
            return None
        finally:
            self.pending.pop(prompt.id, None)
            if self.closed is not None:
                self.closed(prompt, outcome)

    def for_target(self, target: str) -> PendingPrompt | None:
        """The open prompt of ``target``, if any."""
        return next((p for p in self.pending.values() if p.target == target), None)

    def answer(self, prompt_id: str, values: Mapping[str, Any] | None) -> PendingPrompt:
        """A client's answers (None: declined). NotFoundError when no such prompt is open;
        ConfigError when a field is missing, empty or too long."""
        prompt = self.pending.get(prompt_id)
        if prompt is None or prompt.future.done():
            raise NotFoundError("this prompt is no longer open")
        if values is None:
            prompt.future.set_result(None)
            return prompt
        if not isinstance(prompt.request, PromptRequest):  # open_url / show_code
            url = values.get("callback_url")
            if url is not None and (not isinstance(url, str) or len(url) > MAX_ANSWER):
                raise ConfigError("callback_url must be the URL the window came back to")
            prompt.future.set_result({"callback_url": url} if url else {})
            return prompt
        answers: dict[str, Secret | str] = {}
        for f in prompt.request.fields:
            value = values.get(f.name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{f.label} is required")
            if len(value) > MAX_ANSWER:
                raise ConfigError(f"{f.label} is too long")
            answers[f.name] = Secret(value) if f.secret else value.strip()
        prompt.future.set_result(answers)
        return prompt

    def describe(self) -> list[dict[str, Any]]:
        """Every open prompt, oldest first."""
        return [p.describe() for p in self.pending.values()]

    def limited(self, ways: Collection[str] | None, *, headless: bool = False) -> LimitedPrompter:
        """This prompter as a face that can do only ``ways`` (what the client that asked
        can show: ``browser``, ``device``; ``password`` always). None: the password only
        (clients that do not say, and the agent's own reconnects)."""
        return LimitedPrompter(self, set(ways or ()), headless)


class LimitedPrompter:
    """An :class:`AgentPrompter` offering only the link ways a client can show."""

    interactive = True

    def __init__(self, inner: AgentPrompter, ways: set[str], headless: bool) -> None:
        self._inner = inner
        self.headless = headless
        self.open_url: Callable[[OpenUrlRequest], Awaitable[bool]] | None = (
            inner.open_url if "browser" in ways else None)
        self.show_code: Callable[[ShowCodeRequest], Awaitable[None]] | None = (
            inner.show_code if "device" in ways else None)

    async def ask(self, request: PromptRequest) -> Answers | None:
        """The password way: as :meth:`AgentPrompter.ask`."""
        return await self._inner.ask(request)
