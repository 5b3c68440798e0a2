"""The claim-1 flow end to end: Host + driver + vault + interapp plug-in against real servers.

Three application servers run in the test's event loop on real sockets (SQLite files):
arena (the local app), arena-chat (trusts arena's issuer) and chatter (its own accounts).
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from interapp.errors import LinkMismatch, PromptUnavailable
from interapp.host.config import LocalApp, Target
from interapp.host.prompts import NoInput, Scripted
from interapp.host.resolver import Branch
from interapp.host.runtime import Host, target_secret_name
from interapp.secret import Secret
from interapp.server import accounts, passwords, social
from interapp.server.embedded import EmbeddedServer
from interapp.server.oauth import issue
from interapp.server.storage import Database
from interapp.vault import Credential, LinkState

pytestmark = pytest.mark.anyio

PW = {"alice@arena": "arena-pw-1", "alice@chatter": "chatter-pw-1", "bob@chatter": "bob-pw-1"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class World:
    tmp: Path
    arena: EmbeddedServer
    arena_chat: EmbeddedServer
    chatter: EmbeddedServer
    clients: dict[str, tuple[str, Secret]]
    env: dict[str, str]

    @property
    def home(self) -> Path:
        return self.tmp / "host"

    def host(self) -> Host:
        return Host(self.home, env=self.env, call_timeout=10)

    async def db(self, app: str) -> Database:
        return Database.open(f"sqlite:///{self.tmp}/{app}.db")


async def _seed(tmp: Path) -> dict[str, tuple[str, Secret]]:
    clients = {}
    for app in ("arena", "arena-chat", "chatter"):
        db = Database.open(f"sqlite:///{tmp}/{app}.db")
        async with db.begin() as conn:
            if app == "arena":
                await accounts.create_user(conn, "alice", password_hash=passwords.hash_sync(
                    Secret(PW["alice@arena"])))
            elif app == "chatter":
                alice = await accounts.create_user(conn, "alice", password_hash=passwords.hash_sync(
                    Secret(PW["alice@chatter"])))
                bob = await accounts.create_user(conn, "bob", password_hash=passwords.hash_sync(
                    Secret(PW["bob@chatter"])))
                await social.make_buddies(conn, alice, bob)
            cid, secret = await accounts.create_client(conn, "host", public=False)
            assert secret is not None
            clients[app] = (cid, secret)
        await db.close()
    return clients


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clients = await _seed(tmp_path)
    async with AsyncExitStack() as stack:
        arena = await stack.enter_async_context(
            EmbeddedServer("arena", f"sqlite:///{tmp_path}/arena.db"))
        arena_chat = await stack.enter_async_context(
            EmbeddedServer("arena-chat", f"sqlite:///{tmp_path}/arena-chat.db"))
        chatter = await stack.enter_async_context(
            EmbeddedServer("chatter", f"sqlite:///{tmp_path}/chatter.db"))
        db = Database.open(f"sqlite:///{tmp_path}/arena-chat.db")
        async with db.begin() as conn:
            await accounts.trust_issuer(conn, arena.url, jwks=None, jwks_url=None)
        await db.close()
        env = {"INTERAPP_VAULT_KEY": base64.b64encode(os.urandom(32)).decode(),
               "INTERAPP_VAULT_KEYRING": "0"}
        w = World(tmp_path, arena, arena_chat, chatter, clients, env)
        w.home.mkdir()
        async with w.host() as host:
            host.set_local(LocalApp(arena.url, clients["arena"][0], arena.url),
                           clients["arena"][1])
            await host.login("alice", Secret(PW["alice@arena"]))
            host.config.save_targets({
                "arena-chat": Target("arena-chat", "interapp", arena_chat.url,
                                     clients["arena-chat"][0], "shared"),
                "chatter": Target("chatter", "interapp", chatter.url, clients["chatter"][0])})
            for name in ("arena-chat", "chatter"):
                host.vault.put_secret(target_secret_name(name), clients[name][1])
        yield w


def _answers(user: str, pw: str) -> Scripted:
    return Scripted({"username": user, "password": pw})


async def _link(w: World) -> None:
    async with w.host() as host:
        out = await host.connect("chatter", _answers("alice", PW["alice@chatter"]))
        assert out.failure is None and out.connection is not None
        assert out.connection.branch is Branch.PROMPT


async def test_shared_account_system_needs_no_prompt(world: World) -> None:
    async with world.host() as host:
        out = await host.connect("arena-chat", NoInput())
        assert out.failure is None and out.connection is not None
        assert out.connection.branch is Branch.SHARED
        assert out.connection.profile.username == "alice"
        assert out.connection.link is None
        assert host.vault.list_links() == []
        assert "assertion" in out.trace


async def test_first_link_through_prompt_then_stored_link_without_prompt(world: World) -> None:
    await _link(world)
    async with world.host() as host:
        links = host.vault.list_links()
        assert [(ln.target, ln.remote_account_name, ln.state) for ln in links] == [
            ("chatter", "alice", LinkState.LINKED)]
        prompter = NoInput()
        out = await host.connect("chatter", prompter)
        assert out.failure is None and out.connection is not None
        assert out.connection.branch is Branch.STORED
        assert out.connection.link is not None and out.connection.link.id == links[0].id


async def test_wrong_password_stores_nothing_and_says_why(world: World) -> None:
    async with world.host() as host:
        out = await host.connect("chatter", _answers("alice", "wrong"))
        assert out.connection is None and out.failure is not None
        assert "invalid username or password" in out.failure.message
        assert host.vault.list_links() == []


async def test_no_face_fails_at_once_naming_the_command(world: World) -> None:
    async with world.host() as host:
        out = await host.connect("chatter", NoInput())
        assert isinstance(out.failure, PromptUnavailable)
        assert "interapp connect chatter" in out.failure.message


async def _revoke_all(w: World, app: str, user: str) -> None:
    db = await w.db(app)
    async with db.begin() as conn:
        u = await accounts.require_user(conn, user)
        await issue.revoke_user(conn, u.id)
    await db.close()


async def test_revoked_grant_reauths_and_repairs_the_same_link(world: World) -> None:
    await _link(world)
    await _revoke_all(world, "chatter", "alice")
    async with world.host() as host:
        before = host.vault.list_links()[0]
        out = await host.connect("chatter", NoInput())
        assert isinstance(out.failure, PromptUnavailable)
        link = host.vault.get_link_by_id(before.id)
        assert link is not None and link.state is LinkState.NEEDS_REAUTH
        out = await host.connect("chatter", _answers("alice", PW["alice@chatter"]))
        assert out.failure is None and out.connection is not None
        assert out.connection.branch is Branch.REAUTH
        after = host.vault.list_links()
        assert [ln.id for ln in after] == [before.id]
        assert after[0].state is LinkState.LINKED


async def test_reauth_as_another_account_is_refused(world: World) -> None:
    await _link(world)
    await _revoke_all(world, "chatter", "alice")
    async with world.host() as host:
        out = await host.connect("chatter", _answers("bob", PW["bob@chatter"]))
        assert isinstance(out.failure, LinkMismatch)
        link = host.vault.list_links()[0]
        assert link.remote_account_name == "alice"
        assert link.state is LinkState.NEEDS_REAUTH
    # bob's freshly obtained grant was given back to chatter
    db = await world.db("chatter")
    async with db.begin() as conn:
        from interapp.server.storage.schema import token_families

        rows = (await conn.execute(token_families.select())).all()
        bob = await accounts.require_user(conn, "bob")
    await db.close()
    bob_families = [r for r in rows if r.user_id == bob.id]
    assert bob_families and all(r.revoked_at is not None for r in bob_families)


async def _expire_access_token(host: Host) -> None:
    link = host.vault.list_links()[0]
    cred = host.vault.read_credential(link.id)
    host.vault.replace_credential(link.id, expected_version=link.version, credential=Credential(
        kind=cred.kind, fields={**cred.fields, "expires_at": "0"}))


async def test_fifty_concurrent_connects_refresh_once(world: World) -> None:
    import asyncio

    from interapp.host.driver import HostContext, connect_target

    await _link(world)
    async with world.host() as host:
        await _expire_access_token(host)
        target = host.config.target("chatter")
        spec = host.registry.get("interapp")
        ctx = HostContext(host.vault, host.local, host.keeper)
        plugins = [spec.load()(host.target_config(target)) for _ in range(50)]
        outs = await asyncio.gather(*(connect_target(ctx, target, p, NoInput())
                                      for p in plugins))
        assert all(o.failure is None for o in outs), [o.failure for o in outs]
        assert host.keeper.refreshes == 1
        for p in plugins:
            await p.close()
    async with world.host() as host:  # the saved token is the live one
        await _expire_access_token(host)
        out = await host.connect("chatter", NoInput())
        assert out.failure is None and host.keeper.refreshes == 1


async def test_unlink_revokes_at_the_target_first(world: World) -> None:
    await _link(world)
    async with world.host() as host:
        link = host.vault.list_links()[0]
        refresh = host.vault.read_credential(link.id).get("refresh_token")
        host.save_cursor("chatter", "41")
        revoked, note = await host.unlink("chatter")
        assert revoked and "revoked" in note
        assert host.vault.list_links() == []
        # a new link may be to another remote account, whose event seqs are its own
        assert host.load_cursor("chatter") is None
        events = [e.event for e in host.vault.audit_log()]
        assert "unlink" in [str(e) for e in events]
    cid, secret = world.clients["chatter"]
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{world.chatter.url}/oauth/introspect",
                               data={"token": refresh}, auth=(cid, secret.reveal()))
    assert resp.json() == {"active": False}


async def test_no_secret_in_any_file_of_the_data_folder(world: World) -> None:
    await _link(world)
    async with world.host() as host:
        await host.connect("arena-chat", NoInput())
        link = host.vault.list_links()[0]
        cred = host.vault.read_credential(link.id)
        secrets = [PW["alice@arena"], PW["alice@chatter"], cred.get("access_token"),
                   cred.get("refresh_token"), *(s.reveal() for _, s in world.clients.values())]
    blobs = b"".join(p.read_bytes() for p in world.home.rglob("*") if p.is_file())
    for s in secrets:
        assert s and s.encode() not in blobs
    assert oct((world.home / "vault.db").stat().st_mode & 0o777) == "0o600"


async def test_audit_chain_records_the_flow_and_verifies(world: World) -> None:
    await _link(world)
    async with world.host() as host:
        await host.connect("chatter", NoInput())
        kinds = [str(e.event) for e in host.vault.audit_log()]
        assert {"prompt", "link", "credential_use"} <= set(kinds)
        assert host.vault.verify_audit().ok
    con = sqlite3.connect(world.home / "vault.db")
    try:
        with pytest.raises(sqlite3.DatabaseError):
            con.execute("UPDATE audit SET event = 'x'")
    finally:
        con.close()


async def test_a_failing_plugin_does_not_stop_the_others(world: World, monkeypatch: Any) -> None:
    await _link(world)
    async with world.host() as host:
        async def hang(*_: Any) -> Any:
            import asyncio

            await asyncio.sleep(60)

        host.call_timeout = 0.5
        conn = await host.connection("chatter", NoInput())
        other = await host.connection("arena-chat", NoInput())
        monkeypatch.setattr(other.plugin, "buddies", hang)

        async def work(c: Any) -> Any:
            return await c.plugin.buddies()

        results = await host.each_target(None, NoInput(), work)
        assert [b.username for b in results["chatter"]] == ["bob"]  # type: ignore[union-attr]
        assert "did not answer" in str(results["arena-chat"])
        assert host.states["arena-chat"] == "plugin_timeout"
        assert conn is host.connections["chatter"]


CRASHER = """
import asyncio, sys
from pathlib import Path
from interapp.host.prompts import NoInput
from interapp.host.runtime import Host

async def main():
    async with Host(Path(sys.argv[1])) as host:
        out = await host.connect("chatter", NoInput())
        print(out.trace, out.failure)

asyncio.run(main())
"""


async def test_host_killed_between_refresh_and_save_keeps_its_link(world: World) -> None:
    import asyncio
    import subprocess
    import sys

    await _link(world)
    async with world.host() as host:
        await _expire_access_token(host)
        before = host.vault.read_credential(host.vault.list_links()[0].id)
    env = {**os.environ, **world.env, "INTERAPP_FAULT": "crash-after-refresh"}
    # the servers run in this event loop: wait for the child without blocking it
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CRASHER, str(world.home),
                                                env=env, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT)
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 97, output.decode()[-2000:]
    async with world.host() as host:
        link = host.vault.list_links()[0]
        pending = host.vault.read_credential(link.id)
        # the crash left the old token plus the refresh intent; the new pair was never saved
        assert pending.get("refresh_token") == before.get("refresh_token")
        assert pending.get("refresh_key")
        out = await host.connect("chatter", NoInput())
        assert out.failure is None, out.trace
        assert out.connection is not None and out.connection.branch is Branch.STORED
        after = host.vault.read_credential(link.id)
        assert after.get("refresh_token") != before.get("refresh_token")
        assert not after.get("refresh_key")
        await _expire_access_token(host)
    async with world.host() as host:  # and the rotated chain goes on working
        out = await host.connect("chatter", NoInput())
        assert out.failure is None and host.keeper.refreshes == 1


async def test_event_stream_survives_a_server_restart_with_nothing_lost(world: World) -> None:
    import asyncio
    import socket

    from interapp.host.runtime import WatchEvent
    from interapp.plugins.interapp_server.api import ServerClient

    await _link(world)
    cid, secret = world.clients["chatter"]

    async def bob_says(url: str, text: str) -> None:
        bob = ServerClient(url, client_id=cid, client_secret=secret)
        try:
            tokens = await bob.password_grant("bob", Secret(PW["bob@chatter"]))
            bob.access_token = Secret(tokens["access_token"])
            await bob.api("POST", "/v1/messages", json={"to": "alice", "body": text,
                                                        "client_msg_id": text})
        finally:
            await bob.aclose()

    async def next_message(sink: asyncio.Queue[WatchEvent]) -> str:
        while True:
            item = await asyncio.wait_for(sink.get(), 15)
            if item.event.type == "message":
                return str(item.event.data["body"])

    url, port = world.chatter.url, world.chatter.port
    async with world.host() as host:
        sink: asyncio.Queue[WatchEvent] = asyncio.Queue()
        task = asyncio.create_task(host.stream("chatter", NoInput(), sink, max_backoff=0.5))
        try:
            await asyncio.sleep(0.3)
            await bob_says(url, "one")
            assert await next_message(sink) == "one"
            await world.chatter.__aexit__(None, None, None)  # the server goes away
            for _ in range(100):
                link = host.vault.list_links()[0]
                if link.state is LinkState.DEGRADED:
                    break
                await asyncio.sleep(0.05)
            assert link.state is LinkState.DEGRADED
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            async with EmbeddedServer("chatter", f"sqlite:///{world.tmp}/chatter.db",
                                      sock=sock):
                await bob_says(url, "two")  # sent while the host is still backing off
                await bob_says(url, "three")
                got = [await next_message(sink), await next_message(sink)]
                assert got == ["two", "three"]
                await asyncio.sleep(0.3)
                assert sink.empty()  # nothing twice
                assert host.vault.list_links()[0].state is LinkState.LINKED
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
