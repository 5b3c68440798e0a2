"""The agent's face for the claim-1 prompt: any attached client may answer it.

Theory of operation: :class:`AgentPrompter` is the :class:`~interapp.host.Prompter` of every
connect the agent makes — those a client asks for and those the agent makes on its own (a
stream that reconnects and finds its link refused). ``ask`` opens a :class:`PendingPrompt`
with a random id, tells the agent (which publishes a ``prompt`` event and wakes the client
waiting on that target's connect), and waits for ``POST /agent/v1/prompts/{id}``. Unlike the
terminal, it does not give up at once when nobody is attached: a client may attach later and
see the prompt in ``GET /agent/v1/state``; after ``timeout`` seconds the prompt is declined.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from interapp.errors import ConfigError, NotFoundError
from interapp.host import Answers, PromptRequest
from interapp.secret import Secret

PROMPT_TIMEOUT = 300.0
MAX_ANSWER = 4096


@dataclass(eq=False)
class PendingPrompt:
    """A prompt waiting for a client's answers."""

    id: str
    request: PromptRequest
    future: asyncio.Future[Answers | None]

    @property
    def target(self) -> str:
        """The target that asks."""
        return self.request.target

    def describe(self) -> dict[str, Any]:
        """The prompt as the API shows it (no secret: a value only for the expected account)."""
        r = self.request
        return {"id": self.id, "target": r.target, "reason": r.reason,
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

    async def ask(self, request: PromptRequest) -> Answers | None:
        """Publish the prompt and wait (bounded) for a client's answers; None: declined."""
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
