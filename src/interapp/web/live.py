"""Live updates to the browsers, and the prompts they answer.

Theory of operation: every open page holds one WebSocket to the UI server; :class:`Broadcaster`
gives each a bounded queue and :meth:`Broadcaster.publish` puts every update (a message, a
presence change, a prompt, "the targets changed") in all of them. A page that falls too far
behind is dropped; it reconnects and reloads what it shows.

:class:`WebPrompter` is the web face of the host's prompts (:mod:`interapp.host.prompts`): its
``ask`` publishes the :class:`~interapp.host.prompts.PromptRequest` as a form description
(field names, labels, which are secret — never any value but the expected account name) and
waits for the page to post the answers (or *Cancel*). With no page open to answer, it raises
:class:`~interapp.errors.PromptUnavailable` after a short wait instead of hanging; an unanswered
prompt is declined after ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from interapp.host import (
    Answers,
    ConfigError,
    NotFoundError,
    PromptRequest,
    PromptUnavailable,
    Secret,
)

QUEUE_SIZE = 500
PROMPT_TIMEOUT = 300.0
VIEWER_WAIT = 10.0
MAX_ANSWER = 4096


@dataclass(eq=False)
class Viewer:
    """One open page's queue of updates."""

    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_SIZE))
    dropped: asyncio.Event = field(default_factory=asyncio.Event)


class Broadcaster:
    """Fans updates out to every open page."""

    def __init__(self) -> None:
        self._viewers: set[Viewer] = set()
        self._someone = asyncio.Event()

    @property
    def viewers(self) -> int:
        """How many pages are listening."""
        return len(self._viewers)

    def subscribe(self) -> Viewer:
        """A new page listens."""
        viewer = Viewer()
        self._viewers.add(viewer)
        self._someone.set()
        return viewer

    def unsubscribe(self, viewer: Viewer) -> None:
        """A page went away."""
        self._viewers.discard(viewer)
        if not self._viewers:
            self._someone.clear()

    def publish(self, update: dict[str, Any]) -> None:
        """Send ``update`` to every page (a page that cannot keep up is dropped)."""
        for viewer in list(self._viewers):
            try:
                viewer.queue.put_nowait(update)
            except asyncio.QueueFull:
                viewer.dropped.set()
                self.unsubscribe(viewer)

    async def wait_for_viewer(self, within: float) -> bool:
        """True as soon as a page listens; False after ``within`` seconds without one."""
        if self._viewers:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._someone.wait(), within)
        return bool(self._viewers)


@dataclass
class PendingPrompt:
    """A prompt shown in the browser, waiting for its answers."""

    id: str
    request: PromptRequest
    future: asyncio.Future[Answers | None]

    def describe(self) -> dict[str, Any]:
        """What the page needs to build the form (no secret in here)."""
        r = self.request
        return {"id": self.id, "target": r.target, "reason": r.reason,
                "reason_code": str(r.reason_code), "cause": r.cause, "attempt": r.attempt,
                "max_attempts": r.max_attempts, "expected_account": r.expected_account,
                "fields": [{"name": f.name, "label": f.label, "secret": f.secret,
                            "value": "" if f.secret else (r.expected_account or "")}
                           for f in r.fields]}


class WebPrompter:
    """Answers the host's prompts through the browser (see the module docstring)."""

    interactive = True

    def __init__(self, browsers: Broadcaster, *, timeout: float = PROMPT_TIMEOUT,
                 viewer_wait: float = VIEWER_WAIT) -> None:
        self.browsers = browsers
        self.timeout = timeout
        self.viewer_wait = viewer_wait
        self.pending: dict[str, PendingPrompt] = {}

    async def ask(self, request: PromptRequest) -> Answers | None:
        """Show the form in the browser and wait for the answers (None: declined)."""
        if not await self.browsers.wait_for_viewer(self.viewer_wait):
            raise PromptUnavailable(f"{request.target} needs your account information but no "
                                    "browser shows the interapp UI: open it and press Connect")
        future: asyncio.Future[Answers | None] = asyncio.get_running_loop().create_future()
        prompt = PendingPrompt(secrets.token_urlsafe(12), request, future)
        self.pending[prompt.id] = prompt
        self.browsers.publish({"type": "prompt", "prompt": prompt.describe()})
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            return None
        finally:
            self.pending.pop(prompt.id, None)
            self.browsers.publish({"type": "prompt_closed", "id": prompt.id,
                                   "target": request.target})

    def answer(self, prompt_id: str, values: Mapping[str, Any] | None) -> None:
        """The page's answers (None: the user pressed Cancel)."""
        prompt = self.pending.get(prompt_id)
        if prompt is None or prompt.future.done():
            raise NotFoundError("this prompt is no longer open")
        if values is None:
            prompt.future.set_result(None)
            return
        answers: dict[str, Secret | str] = {}
        for f in prompt.request.fields:
            value = values.get(f.name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{f.label} is required")
            if len(value) > MAX_ANSWER:
                raise ConfigError(f"{f.label} is too long")
            answers[f.name] = Secret(value) if f.secret else value.strip()
        prompt.future.set_result(answers)

    def describe(self) -> list[dict[str, Any]]:
        """Every open prompt, oldest first."""
        return [p.describe() for p in self.pending.values()]
