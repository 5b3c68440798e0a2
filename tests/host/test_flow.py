"""The claim-1 flow end to end: the host façade + driver + vault + interapp plug-in, real servers.

Three application servers run in the test's event loop on real sockets (SQLite files):
arena (the local app), arena-chat (trusts arena's issuer) and chatter (its own accounts). The
host is used through its public API; the checks look into the vault (a second, synchronous
handle on the same file) where storage is the point.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from interapp.errors import LinkMismatch, NeedsReauth, PromptUnavailable
from interapp.host import Branch, Host, LinkState, NoInput, Scripted, events
from interapp.secret import Secret
from interapp.server import accounts, passwords, social
from interapp.server.embedded import EmbeddedServer
from interapp.server.oauth import issue
from interapp.server.storage import Database
from interapp.vault import Credential, Vault

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

    def host(self, **kwargs: Any) -> AbstractAsyncContextManager[Host]:
        return Host.open(self.home, env=self.env, **{"call_timeout": 10.0, **kwargs})

    @contextmanager
    def vault(self) -> Iterator[Vault]:
        """The host's vault, opened a second time (SQLite: another connection)."""
        with Vault.open(self.home / "vault.db", env=self.env) as v:
            yield v

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
        async with w.host() as host:
            await host.set_local(arena.url, client_id=clients["arena"][0],
                                 client_secret=clients["arena"][1])
            await host.sign_in("alice", PW["alice@arena"])
            await host.add_target("arena-chat", plugin="interapp", server=arena_chat.url,
                                  client_id=clients["arena-chat"][0],
                                  client_secret=clients["arena-chat"][1],
                                  account_system="shared")
            await host.add_target("chatter", plugin="interapp", server=chatter.url,
                                  client_id=clients["chatter"][0],
                                  client_secret=clients["chatter"][1])
        yield w


def _answers(user: str, pw: str) -> Scripted:
    return Scripted({"username": user, "password": pw})


async def _link(w: World) -> None:
    async with w.host() as host:
        c = await host.connect("chatter", _answers("alice", PW["alice@chatter"]))
        assert c.branch is Branch.PROMPT


async def _bob_says(w: World, text: str, url: str | None = None) -> None:
    """bob (on chatter, or the server at ``url``) sends ``text`` to alice."""
    from interapp.client import ServerClient

    cid, secret = w.clients["chatter"]
    bob = ServerClient(url or w.chatter.url, client_id=cid, client_secret=secret)
    try:
        tokens = await bob.password_grant("bob", Secret(PW["bob@chatter"]))
        bob.access_token = Secret(tokens["access_token"])
        await bob.api("POST", "/v1/messages", json={"to": "alice", "body": text,
                                                    "client_msg_id": text})
    finally:
        await bob.aclose()


async def test_shared_account_system_needs_no_prompt(world: World) -> None:
    async with world.host() as host:
        c = await host.connect("arena-chat", NoInput())
        assert c.branch is Branch.SHARED and c.account == "alice" and c.link is None
        assert await host.links() == []
        assert "assertion" in c.explain


async def test_first_link_through_prompt_then_stored_link_without_prompt(world: World) -> None:
    await _link(world)
    async with world.host() as host:
        links = await host.links()
        assert [(ln.target, ln.remote_account, ln.state) for ln in links] == [
            ("chatter", "alice", LinkState.LINKED)]
        c = await host.connect("chatter", NoInput())
        assert c.branch is Branch.STORED
        assert c.link is not None and c.link.id == links[0].id


async def test_wrong_password_stores_nothing_and_says_why(world: World) -> None:
    async with world.host() as host:
        with pytest.raises(Exception) as refused:
            await host.connect("chatter", _answers("alice", "wrong"))
        assert "invalid username or password" in str(refused.value)
        assert await host.links() == []


async def test_no_face_fails_at_once_without_a_faces_command(world: World) -> None:
    async with world.host() as host:
        with pytest.raises(PromptUnavailable) as failed:
            await host.connect("chatter", NoInput())
        assert failed.value.target == "chatter"
        assert "interapp " not in failed.value.message  # the CLI adds its own hint


async def test_asking_for_another_account_over_a_live_link_is_refused(world: World) -> None:
    await _link(world)
    async with world.host() as host:
        await host.connect("chatter")
        with pytest.raises(LinkMismatch) as refused:
            await host.connect("chatter", _answers("bob", PW["bob@chatter"]), account="bob")
        assert "linked to alice, not bob" in refused.value.message
        assert host.target("chatter").account == "alice"  # the live connection stays
        [link] = await host.links()
        assert (link.remote_account, link.state) == ("alice", LinkState.LINKED)
    async with world.host() as host:  # and from a fresh host, before any login
        with pytest.raises(LinkMismatch):
            await host.connect("chatter", _answers("bob", PW["bob@chatter"]), account="bob")
        assert (await host.connect("chatter", account="alice")).branch is Branch.STORED


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
        [before] = await host.links()
        with pytest.raises(NeedsReauth) as stale:
            await host.connect("chatter", NoInput())
        assert "refused" in stale.value.message and stale.value.cause
        link = await host.link("chatter")
        assert link is not None and link.state is LinkState.NEEDS_REAUTH
        assert "refused" in link.reason
        c = await host.connect("chatter", _answers("alice", PW["alice@chatter"]))
        assert c.branch is Branch.REAUTH
        after = await host.links()
        assert [ln.id for ln in after] == [before.id]
        assert after[0].state is LinkState.LINKED and after[0].last_used is not None


async def test_reauth_as_another_account_is_refused(world: World) -> None:
    await _link(world)
    await _revoke_all(world, "chatter", "alice")
    async with world.host() as host:
        with pytest.raises(LinkMismatch):
            await host.connect("chatter", _answers("bob", PW["bob@chatter"]))
        [link] = await host.links()
        assert link.remote_account == "alice"
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


def _expire_access_token(w: World) -> None:
    with w.vault() as vault:
        link = vault.list_links()[0]
        cred = vault.read_credential(link.id)
        vault.replace_credential(link.id, expected_version=link.version, credential=Credential(
            kind=cred.kind, fields={**cred.fields, "expires_at": "0"}))


async def test_fifty_concurrent_hosts_refresh_once(world: World) -> None:
    """Fifty hosts (as fifty processes would) find the access token expired at once: the
    file lock and the version check let exactly one of them refresh."""
    await _link(world)
    _expire_access_token(world)
    async with AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(world.host()) for _ in range(50)]
        results = await asyncio.gather(*(h.connect("chatter") for h in hosts))
        assert {r.branch for r in results} == {Branch.STORED}
        assert sum(h._keeper.refreshes for h in hosts) == 1
    async with world.host() as host:  # the saved token is the live one
        _expire_access_token(world)
        await host.connect("chatter", NoInput())
        assert host._keeper.refreshes == 1


async def test_a_session_across_several_token_lifetimes_never_fails(tmp_path: Path) -> None:
    """The target's access tokens live 2 s and the local app's 2 s too: a host used for
    longer than several lifetimes refreshes on its own and no call ever fails."""
    from interapp.server.settings import ServerSettings

    clients = await _seed(tmp_path)
    short = {"access_token_ttl": 2}
    async with AsyncExitStack() as stack:
        servers = {}
        for app in ("arena", "chatter"):
            servers[app] = await stack.enter_async_context(EmbeddedServer(
                app, f"sqlite:///{tmp_path}/{app}.db", **short))
        async with Host.open(memory=True, call_timeout=10) as host:
            await host.set_local(servers["arena"].url, client_id=clients["arena"][0],
                                 client_secret=clients["arena"][1])
            await host.sign_in("alice", PW["alice@arena"])
            await host.add_target("chatter", plugin="interapp", server=servers["chatter"].url,
                                  client_id=clients["chatter"][0],
                                  client_secret=clients["chatter"][1])
            await host.connect("chatter", _answers("alice", PW["alice@chatter"]))
            loop = asyncio.get_running_loop()
            end, calls = loop.time() + 7.0, 0
            while loop.time() < end:  # three and a half lifetimes
                assert [b.username for b in await host.buddies("chatter")] == ["bob"]
                sent = await host.send("chatter", "bob", f"still here {calls}")
                assert sent.id
                calls += 1
                await asyncio.sleep(0.4)
            assert calls >= 10
            assert host._keeper.refreshes >= 2
    assert ServerSettings  # the lifetimes above are ServerSettings fields


async def test_unlink_revokes_at_the_target_first(world: World) -> None:
    await _link(world)
    with world.vault() as vault:
        link = vault.list_links()[0]
        refresh = vault.read_credential(link.id).get("refresh_token")
        vault.put_secret("cursor:chatter:alice", Secret("41"))
    async with world.host() as host:
        done = await host.unlink("chatter")
        assert done.remote_revoked and "revoked" in done.note
        assert done.local_credential_destroyed
        assert await host.links() == []
    with world.vault() as vault:
        # a new link may be to another remote account, whose event seqs are its own
        assert vault.get_secret("cursor:chatter:alice") is None
        assert "unlink" in [str(e.event) for e in vault.audit_log()]
    cid, secret = world.clients["chatter"]
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{world.chatter.url}/oauth/introspect",
                               data={"token": refresh}, auth=(cid, secret.reveal()))
    assert resp.json() == {"active": False}


async def test_a_changed_server_never_gets_the_links_credential(world: World) -> None:
    """Issue 16 §3: the link records its server; a target now naming another server gets
    neither the access token nor the refresh token, and says so."""
    await _link(world)
    seen: list[str] = []

    async def record(scope: Any, receive: Any, send: Any) -> None:  # a server that logs all
        if scope["type"] == "http":
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            seen.append(f"{dict(scope['headers']).get(b'authorization', b'')!r} {body!r}")
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

    import uvicorn

    config = uvicorn.Config(record, host="127.0.0.1", port=0, log_level="error")
    other = uvicorn.Server(config)
    task = asyncio.create_task(other.serve())
    while not other.started:  # uvicorn has no event for this
        await asyncio.sleep(0.02)
    port = other.servers[0].sockets[0].getsockname()[1]
    try:
        cid = world.clients["chatter"][0]
        with world.vault() as vault:
            cred = vault.read_credential(vault.list_links()[0].id)
        async with world.host() as host:
            info = await host.add_target("chatter", plugin="interapp",
                                         server=f"http://127.0.0.1:{port}", client_id=cid)
            assert info.server.endswith(str(port))
            link = await host.link("chatter")
            assert link is not None and link.server_changed
            with pytest.raises(Exception) as refused:
                await host.connect("chatter", NoInput())
            assert refused.value.code == "server_changed"  # type: ignore[attr-defined]
            assert world.chatter.url in str(refused.value)
        for secret_value in (cred.get("access_token"), cred.get("refresh_token")):
            assert secret_value and not any(secret_value in line for line in seen)
        async with world.host() as host:  # back to the right server: the link works again
            await host.add_target("chatter", plugin="interapp", server=world.chatter.url,
                                  client_id=cid)
            assert (await host.connect("chatter")).branch is Branch.STORED
    finally:
        other.should_exit = True
        await task


async def test_no_secret_in_any_file_of_the_data_folder(world: World) -> None:
    await _link(world)
    async with world.host() as host:
        await host.connect("arena-chat", NoInput())
    with world.vault() as vault:
        cred = vault.read_credential(vault.list_links()[0].id)
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
        assert (await host.verify_audit()).ok
    with world.vault() as vault:
        kinds = [str(e.event) for e in vault.audit_log()]
        assert {"prompt", "link", "credential_use"} <= set(kinds)
    con = sqlite3.connect(world.home / "vault.db")
    try:
        with pytest.raises(sqlite3.DatabaseError):
            con.execute("UPDATE audit SET event = 'x'")
    finally:
        con.close()


async def test_a_failing_plugin_does_not_stop_the_others(world: World, monkeypatch: Any) -> None:
    await _link(world)
    async with world.host(call_timeout=0.5) as host:
        async def hang(*_: Any) -> Any:
            await asyncio.sleep(60)

        await host.connect("chatter", NoInput())
        await host.connect("arena-chat", NoInput())
        plugin = host._slots["arena-chat"].plugin  # the test reaches inside on purpose
        monkeypatch.setattr(plugin, "buddies", hang)
        found = await host.buddies()
        assert [(b.target, b.username) for b in found] == [("chatter", "bob")]
        assert "did not answer" in found.problems["arena-chat"].message
        assert host.target("chatter").state == "connected"
        assert await host.buddies("arena-chat") == []  # answered by a new plug-in object
        assert host._slots["arena-chat"].plugin is not plugin


CRASHER = """
import asyncio, sys
from pathlib import Path
from interapp.host import Host, NoInput

async def main():
    async with Host.open(Path(sys.argv[1])) as host:
        c = await host.connect("chatter", NoInput())
        print(c.explain)

asyncio.run(main())
"""


async def test_host_killed_between_refresh_and_save_keeps_its_link(world: World) -> None:
    import subprocess
    import sys

    await _link(world)
    _expire_access_token(world)
    with world.vault() as vault:
        before = vault.read_credential(vault.list_links()[0].id)
    env = {**os.environ, **world.env, "INTERAPP_FAULT": "crash-after-refresh"}
    # the servers run in this event loop: wait for the child without blocking it
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CRASHER, str(world.home),
                                                env=env, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT)
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 97, output.decode()[-2000:]
    with world.vault() as vault:
        link = vault.list_links()[0]
        pending = vault.read_credential(link.id)
    # the crash left the old token plus the refresh intent; the new pair was never saved
    assert pending.get("refresh_token") == before.get("refresh_token")
    assert pending.get("refresh_key")
    async with world.host() as host:
        c = await host.connect("chatter", NoInput())
        assert c.branch is Branch.STORED, c.explain
    with world.vault() as vault:
        after = vault.read_credential(link.id)
    assert after.get("refresh_token") != before.get("refresh_token")
    assert not after.get("refresh_key")
    _expire_access_token(world)
    async with world.host() as host:  # and the rotated chain goes on working
        await host.connect("chatter", NoInput())
        assert host._keeper.refreshes == 1


async def test_event_stream_survives_a_server_restart_with_nothing_lost(world: World) -> None:
    import socket

    await _link(world)

    async def bob_says(url: str, text: str) -> None:
        await _bob_says(world, text, url)

    async def next_event(stream: Any) -> events.Event:
        return await asyncio.wait_for(anext(stream), 15)

    async def next_message(stream: Any) -> str:
        while True:
            event = await next_event(stream)
            if isinstance(event, events.MessageReceived):
                return event.message.body

    url, port = world.chatter.url, world.chatter.port
    async with world.host(max_backoff=0.5) as host:
        await host.connect("chatter")
        async with host.events() as stream:
            await asyncio.sleep(0.3)
            await bob_says(url, "one")
            assert await next_message(stream) == "one"
            await world.chatter.__aexit__(None, None, None)  # the server goes away
            while not isinstance(event := await next_event(stream), events.TargetDegraded):
                pass
            assert event.target == "chatter" and event.retry_in <= 0.5 * 1.5
            assert (await host.link("chatter")).state is LinkState.DEGRADED  # type: ignore[union-attr]
            assert host.target("chatter").state == "degraded"
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            async with EmbeddedServer("chatter", f"sqlite:///{world.tmp}/chatter.db",
                                      sock=sock):
                await bob_says(url, "two")  # sent while the host is still backing off
                await bob_says(url, "three")
                got = [await next_message(stream), await next_message(stream)]
                assert got == ["two", "three"]
                await asyncio.sleep(0.3)
                while (left := stream.get_nowait()) is not None:  # nothing twice
                    assert not isinstance(left, events.MessageReceived), left
                assert (await host.link("chatter")).state is LinkState.LINKED  # type: ignore[union-attr]


async def test_stream_cursors_are_saved_without_touching_the_audit_log(world: World) -> None:
    """The cursor is written about once per event received: it lives in ``stream_cursors``
    (vault 0004), not as an audited, fsynced secret; a cursor an older interapp kept as a
    secret is moved there when the stream opens, and nothing is handed out twice."""
    await _link(world)

    async def bob_says(text: str) -> None:
        await _bob_says(world, text)

    async def messages(host: Host, n: int) -> list[str]:
        got = []
        async with host.events() as stream:
            await asyncio.sleep(0.3)
            for i in range(n):
                await bob_says(f"m{len(got) + i}")
            while len(got) < n:
                event = await asyncio.wait_for(anext(stream), 15)
                if isinstance(event, events.MessageReceived):
                    got.append(event.message.body)
        return got

    async with world.host() as host:
        await host.connect("chatter")
        with world.vault() as vault:
            audited = [e.seq for e in vault.audit_log()]
        assert await messages(host, 5) == ["m0", "m1", "m2", "m3", "m4"]
        await asyncio.sleep(0.3)  # the last cursor is saved
        with world.vault() as vault:
            assert [e.seq for e in vault.audit_log()] == audited  # five events, no audit row
    with world.vault() as vault:
        saved = vault.cursors.get("alice", "chatter")
        assert saved is not None
        # as vault 0003 kept it: a secret, and no row
        assert vault.cursors.delete("alice", "chatter")
        vault.put_secret("cursor:chatter:alice", Secret(saved))
    await bob_says("after")
    async with world.host() as host:
        await host.connect("chatter")
        async with host.events() as stream:
            while not isinstance(event := await asyncio.wait_for(anext(stream), 15),
                                 events.MessageReceived):
                pass
            assert event.message.body == "after"  # resumed after m4, not from the start
    with world.vault() as vault:
        assert vault.get_secret("cursor:chatter:alice") is None
        moved = vault.cursors.get("alice", "chatter")
        assert moved is not None and moved != saved
