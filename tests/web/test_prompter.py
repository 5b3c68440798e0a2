"""The web face of the host's prompts (``WebPrompter``) and the page fan-out, without a browser."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from web_kit import run_async

from interapp.errors import ConfigError, NotFoundError, PromptUnavailable
from interapp.host import PromptField
from interapp.host.prompts import PromptRequest
from interapp.secret import Secret
from interapp.web.live import Broadcaster, WebPrompter

FIELDS = (PromptField("username", "Username"), PromptField("password", "Password", secret=True))


def request(attempt: int = 1, expected: str | None = None) -> PromptRequest:
    return PromptRequest("chatter", FIELDS, "sign in to chatter", attempt, 3, expected)


async def _shown(viewer: Any) -> dict[str, Any]:
    update: dict[str, Any] = await asyncio.wait_for(viewer.queue.get(), 2)
    assert update["type"] == "prompt"
    prompt: dict[str, Any] = update["prompt"]
    return prompt


def test_no_page_open_means_unavailable_not_a_hang() -> None:
    async def go() -> None:
        prompter = WebPrompter(Broadcaster(), viewer_wait=0.05)
        with pytest.raises(PromptUnavailable, match="no browser"):
            await asyncio.wait_for(prompter.ask(request()), 2)

    run_async(go)


def test_answers_come_back_with_secret_fields_wrapped() -> None:
    async def go() -> None:
        browsers = Broadcaster()
        viewer = browsers.subscribe()
        prompter = WebPrompter(browsers, viewer_wait=1)
        assert prompter.interactive is True
        asking = asyncio.create_task(prompter.ask(request(2, expected="alice")))
        shown = await _shown(viewer)
        assert shown["target"] == "chatter" and shown["attempt"] == 2
        assert shown["max_attempts"] == 3
        assert shown["fields"] == [
            {"name": "username", "label": "Username", "secret": False, "value": "alice"},
            {"name": "password", "label": "Password", "secret": True, "value": ""}]
        assert prompter.describe() == [shown]
        with pytest.raises(ConfigError, match="Password is required"):
            prompter.answer(shown["id"], {"username": "alice", "password": ""})
        prompter.answer(shown["id"], {"username": " alice ", "password": "s3cret"})
        answers = await asyncio.wait_for(asking, 2)
        assert answers is not None
        assert answers["username"] == "alice"
        assert isinstance(answers["password"], Secret)
        assert answers["password"].reveal() == "s3cret"
        closed = await asyncio.wait_for(viewer.queue.get(), 2)
        assert closed == {"type": "prompt_closed", "id": shown["id"], "target": "chatter"}
        assert prompter.describe() == []
        with pytest.raises(NotFoundError):
            prompter.answer(shown["id"], None)

    run_async(go)


def test_cancel_declines() -> None:
    async def go() -> None:
        browsers = Broadcaster()
        viewer = browsers.subscribe()
        prompter = WebPrompter(browsers)
        asking = asyncio.create_task(prompter.ask(request()))
        shown = await _shown(viewer)
        prompter.answer(shown["id"], None)
        assert await asyncio.wait_for(asking, 2) is None

    run_async(go)


def test_unanswered_prompt_is_declined_after_the_timeout() -> None:
    async def go() -> None:
        browsers = Broadcaster()
        viewer = browsers.subscribe()
        prompter = WebPrompter(browsers, timeout=0.2)
        assert await asyncio.wait_for(prompter.ask(request()), 2) is None
        assert (await viewer.queue.get())["type"] == "prompt"
        assert (await viewer.queue.get())["type"] == "prompt_closed"

    run_async(go)


def test_a_page_that_cannot_keep_up_is_dropped() -> None:
    async def go() -> None:
        browsers = Broadcaster()
        slow = browsers.subscribe()
        for i in range(slow.queue.maxsize + 1):
            browsers.publish({"type": "notice", "text": str(i)})
        assert slow.dropped.is_set()
        assert browsers.viewers == 0

    run_async(go)
