"""``interapp connect NAME --via device|browser`` as a user runs it: a real ``interapp`` process
without a terminal (as over SSH), real interapp servers. The device way prints the code, the
URL and its progress on standard error while a person (the form-filling browser) types the code
on the target's /device page; the browser way runs the "system browser" that Python's
``webbrowser`` picks from ``$BROWSER`` — here ``python -m interapp.testing.browser``, which
signs in on the target's page and lands on the command's loopback listener.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_linking import LOOPBACK, PW, _seed

from interapp.host import Host
from interapp.server.embedded import EmbeddedServer
from interapp.testing.browser import FormBrowser
from interapp.vault import Vault

pytestmark = pytest.mark.anyio
EXE = Path(sys.executable).with_name("interapp")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Setup:
    home: Path
    env: dict[str, str]
    chatter: EmbeddedServer


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    assert LOOPBACK
    clients = await _seed(tmp_path)
    async with AsyncExitStack() as stack:
        arena = await stack.enter_async_context(
            EmbeddedServer("arena", f"sqlite:///{tmp_path}/arena.db"))
        chatter = await stack.enter_async_context(
            EmbeddedServer("chatter", f"sqlite:///{tmp_path}/chatter.db",
                           device_poll_interval=1))
        home = tmp_path / "host"
        key = base64.b64encode(os.urandom(32)).decode()
        vault_env = {"INTERAPP_VAULT_KEY": key, "INTERAPP_VAULT_KEYRING": "0"}
        async with Host.open(home, env=vault_env) as host:
            await host.set_local(arena.url, client_id=clients["arena"][0],
                                 client_secret=clients["arena"][1])
            await host.sign_in("alice", PW["alice@arena"])
            await host.add_target("chatter", plugin="interapp", server=chatter.url,
                                  client_id=clients["chatter"][0],
                                  client_secret=clients["chatter"][1])
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("INTERAPP_") and k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        env.update(vault_env, INTERAPP_HOME=str(home))
        yield Setup(home, env, chatter)


def _links(s: Setup) -> list[str]:
    with Vault.open(s.home / "vault.db", env=s.env) as v:
        return [ln.remote_account_name for ln in v.list_links()]


async def test_connect_via_device_prints_the_code_and_progress(setup: Setup) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(EXE), "connect", "chatter", "--via", "device", "--explain",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=setup.env)
    assert proc.stderr is not None and proc.stdout is not None
    seen = ""
    code = None
    async with asyncio.timeout(60):
        while code is None:
            line = (await proc.stderr.readline()).decode()
            assert line, f"the command ended before showing a code: {seen}"
            seen += line
            found = re.search(r"enter the code:\s+([B-Z]{4}-[B-Z]{4})", seen)
            code = found.group(1) if found else None
    assert f"visit {setup.chatter.url}/device" in seen
    browser = FormBrowser("alice", PW["alice@chatter"])
    try:
        page = await browser.enter_code(f"{setup.chatter.url}/device", code)
        assert "Device connected" in page.text
    finally:
        await browser.aclose()
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    rest = seen + err.decode()
    assert proc.returncode == 0, rest
    assert out.decode().strip() == "connected to chatter as alice (prompt)"
    assert "waiting for the code to be entered and allowed" in rest
    assert "way: device (requested: you asked for it with --via)" in rest
    assert _links(setup) == ["alice"]


async def test_connect_via_browser_opens_the_system_browser(setup: Setup) -> None:
    env = {**setup.env, "BROWSER": f"{sys.executable} -m interapp.testing.browser %s",
           "INTERAPP_TEST_BROWSER_USER": "alice",
           "INTERAPP_TEST_BROWSER_PASSWORD": PW["alice@chatter"]}
    proc = await asyncio.create_subprocess_exec(
        str(EXE), "connect", "chatter", "--via", "browser", "--explain", "--json",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert f"{setup.chatter.url}/oauth/authorize?" in err.decode()  # the URL, in case
    import json

    data = json.loads(out)
    assert (data["way"], data["way_reason"], data["branch"]) == ("browser", "requested",
                                                                  "prompt")
    assert _links(setup) == ["alice"]
    assert PW["alice@chatter"] not in out.decode() + err.decode()


async def test_denied_in_the_browser_fails_with_access_denied(setup: Setup) -> None:
    env = {**setup.env, "BROWSER": f"{sys.executable} -m interapp.testing.browser %s",
           "INTERAPP_TEST_BROWSER_USER": "alice",
           "INTERAPP_TEST_BROWSER_PASSWORD": PW["alice@chatter"],
           "INTERAPP_TEST_BROWSER_DECISION": "deny"}
    proc = await asyncio.create_subprocess_exec(
        str(EXE), "connect", "chatter", "--via", "browser",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    async with asyncio.timeout(90):
        _, err = await proc.communicate()
    assert proc.returncode != 0
    assert "access_denied" in err.decode() and "nothing was stored" in err.decode()
    assert _links(setup) == []
