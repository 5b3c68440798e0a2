"""The browser and device link ways with a real browser: Playwright drives Chromium through the
target's sign-in, consent and device pages.

The host's prompter here is what an application's would be: ``open_url`` opens the page in
Chromium (as ``webbrowser.open`` opens the system browser), where the person signs in and
allows; Chromium itself is then sent to the host's loopback listener, which finishes the link.
``show_code`` opens the device page (the code typed in by hand), and the host polls meanwhile.
Chromium is Debian's, launched exactly as the web UI suite does (``tests/web/web_kit.py``).
Playwright's sync API lives on one thread of its own; the host's loop stays free.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from test_linking import PW, World, world  # noqa: F401 - world: the servers' fixture

from interapp.host import (
    AccessDenied,
    Answers,
    Branch,
    OpenUrlRequest,
    PromptRequest,
    PromptUnavailable,
    ShowCodeRequest,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
T = TypeVar("T")
WEB = Path(__file__).resolve().parents[1] / "web"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _web_kit() -> ModuleType:
    if "web_kit" not in sys.modules:
        spec = importlib.util.spec_from_file_location("web_kit", WEB / "web_kit.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["web_kit"] = module
        spec.loader.exec_module(module)
    return sys.modules["web_kit"]


class Chromium:
    """One Chromium, driven from a thread of its own."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="playwright")
        self.pw: Any = None
        self.browser: Any = None

    def start(self) -> None:
        from playwright.sync_api import sync_playwright

        kit = _web_kit()
        chromium = kit.ensure_chromium()
        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(executable_path=str(chromium), headless=True,
                                               args=kit.CHROMIUM_ARGS)

    def stop(self) -> None:
        self.browser.close()
        self.pw.stop()

    async def run(self, work: Callable[[Any], T]) -> T:
        """``work(browser)`` on the Playwright thread."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, work, self.browser)


@pytest.fixture
async def chromium() -> AsyncIterator[Chromium]:
    c = Chromium()
    await asyncio.get_running_loop().run_in_executor(c.pool, c.start)
    try:
        yield c
    finally:
        await asyncio.get_running_loop().run_in_executor(c.pool, c.stop)
        c.pool.shutdown()


def _sign_in_and_decide(page: Any, username: str, password: str, decision: str) -> None:
    page.wait_for_selector("#signin-form")
    page.fill("#signin-username", username)
    page.fill("#signin-password", password)
    page.click("#signin-submit")
    page.wait_for_selector(f"#consent-{decision}")
    page.click(f"#consent-{decision}")


class ChromiumUser:
    """A person with Chromium: the application's prompter opens pages there."""

    interactive = True

    def __init__(self, chromium: Chromium, *, decision: str = "allow",
                 headless: bool = False) -> None:
        self.chromium = chromium
        self.decision = decision
        self.headless = headless
        self.landed: list[str] = []
        self.pages: list[str] = []
        self.tasks: list[asyncio.Future[None]] = []

    async def ask(self, request: PromptRequest) -> Answers | None:
        raise PromptUnavailable("this person signs in on the target's own page")

    def _browse(self, url: str, code: str | None) -> Callable[[Any], None]:
        def work(browser: Any) -> None:
            context = browser.new_context()
            page = context.new_page()
            try:
                page.goto(url)
                if code is not None:
                    page.wait_for_selector("#device-form")
                    page.fill("#device-code", code)
                    page.click("#device-submit")
                _sign_in_and_decide(page, "alice", PW["alice@chatter"], self.decision)
                page.wait_for_load_state()
                page.wait_for_timeout(300)
                self.landed.append(page.url)
                self.pages.append(page.inner_text("body"))
            finally:
                context.close()
        return work

    async def open_url(self, request: OpenUrlRequest) -> bool:
        self.tasks.append(asyncio.ensure_future(
            self.chromium.run(self._browse(request.url, None))))
        return True

    async def show_code(self, request: ShowCodeRequest) -> None:
        self.tasks.append(asyncio.ensure_future(
            self.chromium.run(self._browse(request.verification_uri, request.user_code))))

    async def settle(self) -> None:
        await asyncio.gather(*self.tasks)


async def test_chromium_links_through_the_browser_way(world: World,  # noqa: F811
                                                      chromium: Chromium) -> None:
    user = ChromiumUser(chromium)
    async with world.host() as host:
        c = await host.connect("chatter", user)
        await user.settle()
    assert c.branch is Branch.PROMPT and (c.way, c.account) == ("browser", "alice")
    assert user.landed[0].startswith("http://127.0.0.1:") and "/callback?" in user.landed[0]
    assert "Signed in" in user.pages[0]  # the loopback listener's page, in Chromium
    assert [ln.remote_account_name for ln in world.links()] == ["alice"]


async def test_chromium_links_with_a_device_code(world: World,  # noqa: F811
                                                 chromium: Chromium) -> None:
    user = ChromiumUser(chromium, headless=True)
    async with world.host() as host:
        c = await host.connect("chatter", user)
        await user.settle()
    assert (c.way, c.way_reason) == ("device", "headless")
    assert "Device connected" in user.pages[0]
    assert world.remembered_ways() == ["device"]


async def test_chromium_deny_is_access_denied_and_stores_nothing(world: World,  # noqa: F811
                                                                 chromium: Chromium) -> None:
    user = ChromiumUser(chromium, decision="deny")
    async with world.host() as host:
        with pytest.raises(AccessDenied):
            await host.connect("chatter", user)
        await user.settle()
    assert world.links() == [] and world.remembered_ways() == []
