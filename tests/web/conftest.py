"""Fixtures of the web UI suite (the helpers behind them are in ``web_kit.py``).

* ``chromium``: Debian's ``/usr/bin/chromium``, installed with ``apt-get`` when missing (the
  suite fails loudly when that is impossible; it is never skipped).
* ``browser``: headless Chromium driven by Playwright (``executable_path``; no
  ``playwright install``).
* ``world``: arena, chatter and arena-chat on their own threads, and a configured host data
  folder; ``ui``: ``interapp ui --no-browser`` on that folder, in its own process.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_kit import (
    CHROMIUM_ARGS,
    UIProcess,
    World,
    configure_host,
    ensure_chromium,
    run_async,
    seed_apps,
    start_ui,
    stop_ui,
    trust_arena,
)

from interapp.testing.servers import ThreadedServer


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium (installed when missing)."""
    return ensure_chromium()


@pytest.fixture(scope="session")
def browser(chromium: Path) -> Iterator[Any]:
    """A headless Chromium driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright Python package is required (pip install playwright)",
                    pytrace=False)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Real application servers and a configured (not yet logged in) host data folder."""
    tmp = tmp_path_factory.mktemp("web")
    clients, peer = run_async(lambda: seed_apps(tmp))
    servers: dict[str, ThreadedServer] = {}
    try:
        for app in ("arena", "chatter", "arena-chat"):
            servers[app] = ThreadedServer(app, tmp / f"{app}.db").start()
        run_async(lambda: trust_arena(tmp, servers["arena"].url))
        home = tmp / "host"
        home.mkdir(mode=0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")}
        env.update(INTERAPP_HOME=str(home), INTERAPP_VAULT_KEYRING="0",
                   INTERAPP_VAULT_KEY=base64.b64encode(os.urandom(32)).decode())
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        w = World(tmp, home, env, servers, clients, peer)
        run_async(lambda: configure_host(w))
        yield w
        for p in w.peers.values():
            p.http.close()
    finally:
        for srv in servers.values():
            srv.stop()


@pytest.fixture(scope="module")
def ui(world: World) -> Iterator[UIProcess]:
    """The UI server of the module's world."""
    proc = start_ui(world)
    yield proc
    stop_ui(proc)
