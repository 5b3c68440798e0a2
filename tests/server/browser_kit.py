"""Chromium for the authorization pages' tests, launched exactly as the web UI suite does
(``tests/web/web_kit.py``: Debian's /usr/bin/chromium, installed with apt-get when missing,
driven by Playwright through ``executable_path``; no browser download)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
WEB = Path(__file__).resolve().parents[1] / "web"


def _web_kit() -> ModuleType:
    """The web UI suite's kit (Chromium set-up), loaded from its file."""
    if "web_kit" not in sys.modules:
        spec = importlib.util.spec_from_file_location("web_kit", WEB / "web_kit.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["web_kit"] = module
        spec.loader.exec_module(module)
    return sys.modules["web_kit"]


def screenshot(name: str) -> Path:
    """Where a page's picture goes: docs/screenshots/, as the web UI suite keeps them."""
    folder: Path = _web_kit().SCREENSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


def off_loop(work: Callable[[], T]) -> T:
    """Run ``work`` on another thread: Playwright's sync API keeps a loop on this one, and the
    database helpers start their own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result(120)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    kit = _web_kit()
    chromium = kit.ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(chromium), headless=True,
                               args=kit.CHROMIUM_ARGS)
        yield b
        b.close()
