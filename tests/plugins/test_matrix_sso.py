"""Alice, signed in to arena, links her Matrix account without any Matrix password.

A real Synapse (``.peers/synapse``) is configured with the interapp app *arena* as its OpenID
Connect provider: ``oidc_providers`` with arena's discovery URL and a confidential client made
by the real ``interapp admin add-client`` command. The host (the public SDK) connects its
``matrix`` target through the browser way: the matrix plug-in sends the browser to Synapse's
``m.login.sso`` redirect, Synapse sends it on to arena's authorization page (PKCE, nonce),
alice signs in and allows there, Synapse redeems the code and checks the ID token, and sends the
browser back to the host's loopback listener with a ``loginToken``; ``m.login.token`` makes the
session the vault keeps. The "browser" is the form-filling one of ``interapp.testing.browser``
(the Chromium drive of the same pages is ``tests/server/test_oidc_synapse.py``).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from interapp.host import Branch, Host, LinkState, NoInput, PromptDeclined
from interapp.secret import Secret
from interapp.server import accounts, passwords
from interapp.server.embedded import EmbeddedServer
from interapp.server.storage import Database
from interapp.testing.browser import BrowserUser, FormBrowser
from interapp.testing.servers import free_port
from interapp.testing.synapse import SynapseServer
from interapp.vault import Vault

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
ARENA_PW = "arena-pw-sso-1"
EXE = Path(sys.executable).with_name("interapp")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class World:
    arena: EmbeddedServer
    synapse: SynapseServer
    home: Path
    env: dict[str, str]
    host_client: tuple[str, Secret]


def _add_client(db_url: str, port: int) -> dict[str, Any]:
    """``interapp admin add-client`` exactly as an operator runs it."""
    done = subprocess.run(
        [str(EXE), "admin", "add-client", "--app", "arena", "--db", db_url, "Matrix",
         "--redirect-uri", f"http://127.0.0.1:{port}/_synapse/client/oidc/callback",
         "--grant", "authorization_code", "--json"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")})
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db_url = f"sqlite:///{tmp_path}/arena.db"
    db = Database.open(db_url)
    async with db.begin() as conn:
        await accounts.create_user(conn, "alice", display_name="Alice Arena",
                                   password_hash=passwords.hash_sync(Secret(ARENA_PW)))
        cid, secret = await accounts.create_client(conn, "host", public=False)
        assert secret is not None
    await db.close()
    port = free_port()
    client = await anyio.to_thread.run_sync(_add_client, db_url, port)
    async with AsyncExitStack() as stack:
        arena = await stack.enter_async_context(EmbeddedServer("arena", db_url))
        provider = {
            "idp_id": "arena", "idp_name": "arena", "issuer": arena.url, "discover": True,
            "client_id": client["client_id"], "client_secret": client["client_secret"],
            "client_auth_method": "client_secret_basic", "scopes": ["openid", "profile"],
            "pkce_method": "always", "skip_verification": True,
            "user_mapping_provider": {"config": {
                "localpart_template": "{{ user.preferred_username }}",
                "display_name_template": "{{ user.name }}"}}}
        synapse = SynapseServer(tmp_path / "synapse", port=port, extra_config={
            "public_baseurl": f"http://127.0.0.1:{port}/", "oidc_providers": [provider],
            "sso": {"client_whitelist": ["http://127.0.0.1:"]}})
        await anyio.to_thread.run_sync(synapse.start)
        stack.callback(synapse.stop)
        env = {"INTERAPP_VAULT_KEY": base64.b64encode(os.urandom(32)).decode(),
               "INTERAPP_VAULT_KEYRING": "0"}
        yield World(arena, synapse, tmp_path / "host", env, (cid, secret))


async def test_alice_links_her_matrix_account_through_arena(world: World) -> None:
    browser = FormBrowser("alice", ARENA_PW)
    user = BrowserUser(browser)
    try:
        async with Host.open(world.home, env=world.env, call_timeout=30.0) as host:
            await host.set_local(world.arena.url, client_id=world.host_client[0],
                                 client_secret=world.host_client[1])
            await host.sign_in("alice", ARENA_PW)
            await host.add_target("matrix", plugin="matrix", server=world.synapse.url)
            c = await host.connect("matrix", user)
            await user.settle()
            assert c.branch is Branch.PROMPT and c.account == "@alice:localhost"
            assert (c.way, c.way_reason) == ("browser", "most_secure")
            opened = user.opened[0].url
            assert opened.startswith(f"{world.synapse.url}/_matrix/client/v3/login/sso/"
                                     "redirect?redirectUrl=")
            # the browser really went through arena's authorization endpoint, with PKCE
            authorize = next(u for u in browser.visited
                             if u.startswith(f"{world.arena.url}/oauth/authorize?"))
            assert "code_challenge_method=S256" in authorize and "nonce=" in authorize
            assert "Signed in" in browser.last_page  # the loopback listener's page
        async with Host.open(world.home, env=world.env, call_timeout=30.0) as host:
            again = await host.connect("matrix", NoInput())  # the stored link, no browser
            assert again.branch is Branch.STORED and again.account == "@alice:localhost"
        with Vault.open(world.home / "vault.db", env=world.env) as v:
            [link] = v.list_links()
            assert link.state is LinkState.LINKED and link.credential_kind == "matrix_session"
            assert v.get_secret(f"link_way:{link.id}").reveal() == "browser"  # type: ignore
            cred = v.read_credential(link.id)
            assert set(cred.fields) == {"access_token", "device_id", "user_id", "homeserver"}
        # the Matrix account is arena's alice, named by arena's ID token
        async with httpx.AsyncClient(timeout=10) as http:
            who = await http.get(f"{world.synapse.url}/_matrix/client/v3/profile/"
                                 "@alice:localhost/displayname",
                                 headers={"Authorization": f"Bearer {cred.get('access_token')}"})
        assert who.json()["displayname"] == "Alice Arena"
    finally:
        await browser.aclose()


async def test_denied_at_arena_links_nothing(world: World) -> None:
    browser = FormBrowser("alice", ARENA_PW, decision="deny")
    user = BrowserUser(browser)
    try:
        async with Host.open(world.home, env=world.env, call_timeout=30.0) as host:
            await host.set_local(world.arena.url, client_id=world.host_client[0],
                                 client_secret=world.host_client[1])
            await host.sign_in("alice", ARENA_PW)
            await host.add_target("matrix", plugin="matrix", server=world.synapse.url)
            with anyio.fail_after(60), pytest.raises(PromptDeclined):
                # Synapse shows its own error page for arena's access_denied and never sends
                # the browser back: the person closes the window
                await host.connect("matrix", user)
            assert await host.links() == []
        assert "access_denied" in browser.last_page or browser.last_page
    finally:
        await browser.aclose()


async def test_same_account_system_without_the_jwt_module_uses_sso(world: World) -> None:
    """A homeserver that trusts arena through OIDC but has no JWT login module: the
    same-account-system branch's assertion is refused, and the browser way signs alice in
    through arena instead (no Matrix password, no JWT module)."""
    browser = FormBrowser("alice", ARENA_PW)
    user = BrowserUser(browser)
    try:
        async with Host.open(world.home, env=world.env, call_timeout=30.0) as host:
            await host.set_local(world.arena.url, client_id=world.host_client[0],
                                 client_secret=world.host_client[1])
            await host.sign_in("alice", ARENA_PW)
            await host.add_target("matrix", plugin="matrix", server=world.synapse.url,
                                  account_system="shared")
            c = await host.connect("matrix", user)
            await user.settle()
        assert c.account == "@alice:localhost" and c.way == "browser"
        assert "assertion refused" in c.explain and "signing in through browser" in c.explain
    finally:
        await browser.aclose()
