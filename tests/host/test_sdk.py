"""The host SDK as an application uses it: BlockingHost from a plain loop, in-memory hosts for
several users, callbacks, and an event stream that goes on when one target needs re-auth.

arena (the local app), arena-chat (trusts arena) and chatter (its own accounts) run as real
servers on their own threads.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from interapp.host import (
    Branch,
    Host,
    LinkState,
    NoLocalApp,
    NotSignedIn,
    PromptRequest,
    Scripted,
    Secret,
    TargetState,
    events,
)
from interapp.host.blocking import BlockingHost
from interapp.testing.servers import ThreadedServer

PW = {"alice@arena": "arena-pw-1", "bob@arena": "arena-pw-2", "alice@chatter": "chatter-pw-1",
      "bob@chatter": "bob-pw-1"}


@dataclass
class Apps:
    arena: ThreadedServer
    arena_chat: ThreadedServer
    chatter: ThreadedServer
    clients: dict[str, tuple[str, Secret]]

    async def sign_in(self, host: Host, user: str = "alice") -> None:
        cid, secret = self.clients["arena"]
        await host.set_local(self.arena.url, client_id=cid, client_secret=secret)
        await host.sign_in(user, PW[f"{user}@arena"])
        for name, server, system in (("arena-chat", self.arena_chat, "shared"),
                                     ("chatter", self.chatter, "separate")):
            tid, tsecret = self.clients[name]
            await host.add_target(name, plugin="interapp", server=server.url, client_id=tid,
                                  client_secret=tsecret, account_system=system)

    def say(self, sender: str, to: str, body: str) -> None:
        """A message from another client of chatter."""
        cid, secret = self.clients["chatter"]
        with httpx.Client(base_url=self.chatter.url, timeout=10) as http:
            token = http.post("/oauth/token", auth=(cid, secret.reveal()), data={
                "grant_type": "password", "username": sender,
                "password": PW[f"{sender}@chatter"]}).json()["access_token"]
            r = http.post("/v1/messages", headers={"Authorization": f"Bearer {token}"},
                          json={"to": to, "body": body, "client_msg_id": os.urandom(8).hex()})
            assert r.status_code == 201, r.text


def _seed(server: ThreadedServer, users: tuple[str, ...], app: str,
          trust: str | None = None) -> tuple[str, Secret]:
    from interapp.server import accounts, passwords, social
    from interapp.server.storage import Database

    async def work() -> tuple[str, Secret]:
        db = Database.open(server.db_url)
        try:
            async with db.begin() as conn:
                made = [await accounts.create_user(conn, u, password_hash=passwords.hash_sync(
                    Secret(PW[f"{u}@{app}"]))) for u in users]
                if len(made) == 2:
                    await social.make_buddies(conn, made[0], made[1])
                if trust is not None:
                    await accounts.trust_issuer(conn, trust, jwks=None, jwks_url=None)
                cid, secret = await accounts.create_client(conn, "game", public=False)
                assert secret is not None
                return cid, secret
        finally:
            await db.close()

    return server.call(work)


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    folder = tmp_path_factory.mktemp("sdk")
    arena = ThreadedServer("arena", folder / "arena.db").start()
    arena_chat = ThreadedServer("arena-chat", folder / "arena-chat.db").start()
    chatter = ThreadedServer("chatter", folder / "chatter.db").start()
    try:
        clients = {"arena": _seed(arena, ("alice", "bob"), "arena"),
                   "arena-chat": _seed(arena_chat, (), "arena-chat", trust=arena.url),
                   "chatter": _seed(chatter, ("alice", "bob"), "chatter")}
        yield Apps(arena, arena_chat, chatter, clients)
    finally:
        for s in (arena, arena_chat, chatter):
            s.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def answers(user: str) -> Scripted:
    return Scripted({"username": user, "password": PW[f"{user}@chatter"]})


def test_blocking_host_from_a_plain_while_loop(apps: Apps, tmp_path: Path) -> None:
    """A game loop: blocking calls, a dialog that is a plain function, poll() once a frame."""
    asked: list[PromptRequest] = []

    def dialog(request: PromptRequest) -> dict[str, str | Secret]:
        asked.append(request)
        return {"username": "alice", "password": Secret(PW["alice@chatter"])}

    got: list[events.Event] = []
    key = base64.b64encode(os.urandom(32)).decode()
    host = BlockingHost.open(tmp_path / "game", vault_key=key, prompter=dialog)
    try:
        cid, secret = apps.clients["arena"]
        host.set_local(apps.arena.url, client_id=cid, client_secret=secret)
        host.sign_in("alice", PW["alice@arena"])
        assert host.signed_in == "alice"
        for name, server, system in (("arena-chat", apps.arena_chat, "shared"),
                                     ("chatter", apps.chatter, "separate")):
            tid, tsecret = apps.clients[name]
            host.add_target(name, plugin="interapp", server=server.url, client_id=tid,
                            client_secret=tsecret, account_system=system)
        assert host.connect("arena-chat").branch is Branch.SHARED
        assert host.connect("chatter").branch is Branch.PROMPT
        assert [r.target for r in asked] == ["chatter"]
        assert [b.username for b in host.buddies("chatter")] == ["bob"]
        off = host.on(events.MessageReceived, got.append)
        answered, next_send = False, 0.0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the game's frame loop
            if not answered and time.monotonic() > next_send:  # until the stream is live
                sent = host.send("chatter", "bob", "ready?")
                assert sent.own and sent.client_msg_id
                next_send = time.monotonic() + 2.0
            for event in host.poll():
                if isinstance(event, events.MessageReceived) and event.message.own \
                        and not answered:  # our own echo: the stream is live; bob answers
                    apps.say("bob", "alice", "yes!")
                    answered = True
            if any(not e.message.own for e in got if isinstance(e, events.MessageReceived)):
                break
            time.sleep(1 / 60)
        off()
        theirs = [e.message.body for e in got if isinstance(e, events.MessageReceived)
                  and not e.message.own]
        assert theirs == ["yes!"], got
        assert host.set_presence("busy", "in a match").targets == ("arena-chat", "chatter")
    finally:
        host.close()
    with BlockingHost.open(tmp_path / "game", vault_key=key) as again:  # a restart
        assert again.connect("chatter").branch is Branch.STORED  # the stored link, no dialog
        assert len(asked) == 1


@pytest.mark.anyio
async def test_in_memory_hosts_for_two_users_write_nothing(apps: Apps, tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    monkeypatch.setenv("INTERAPP_HOME", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "nor-here"))
    async with Host.open(memory=True) as alice, Host.open(memory=True) as bob:
        assert alice.home is None
        with pytest.raises(NoLocalApp):
            await alice.buddies("chatter")
        cid, secret = apps.clients["arena"]
        await alice.set_local(apps.arena.url, client_id=cid, client_secret=secret)
        assert await alice.buddies() == []  # nothing configured: nothing to ask
        with pytest.raises(NotSignedIn):
            await alice.connect("chatter")
        await apps.sign_in(alice, "alice")
        await apps.sign_in(bob, "bob")
        await alice.connect("chatter", answers("alice"))
        await bob.connect("chatter", answers("bob"))
        async with bob.events() as stream:
            await asyncio.sleep(0.3)
            await alice.send("chatter", "bob", "hi bob")
            while True:
                event = await asyncio.wait_for(anext(stream), 10)
                if isinstance(event, events.MessageReceived) and not event.message.own:
                    break
        assert (event.message.sender, event.message.body) == ("alice", "hi bob")
        assert [ln.remote_account for ln in await alice.links()] == ["alice"]
        assert [ln.remote_account for ln in await bob.links()] == ["bob"]
    assert not (tmp_path / "nothing-here").exists() and not (tmp_path / "nor-here").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_events_go_on_when_one_target_needs_reauth(apps: Apps) -> None:
    """chatter's link stops being accepted: LinkNeedsReauth for chatter, and arena-chat's
    events keep coming on the same iterator."""
    from interapp.server import accounts
    from interapp.server.oauth import issue
    from interapp.server.storage import Database

    seen: list[events.Event] = []
    async with Host.open(memory=True, max_backoff=0.5) as host:
        await apps.sign_in(host)
        await host.connect("chatter", answers("alice"))
        await host.connect("arena-chat")
        host.on(events.Event, seen.append)
        async with host.events() as stream:
            await asyncio.sleep(0.5)

            async def revoke() -> None:
                db = Database.open(apps.chatter.db_url)
                try:
                    async with db.begin() as conn:
                        user = await accounts.require_user(conn, "alice")
                        await issue.revoke_user(conn, user.id)
                finally:
                    await db.close()

            await asyncio.to_thread(apps.chatter.call, revoke)  # open streams close (4401)
            while True:
                event = await asyncio.wait_for(anext(stream), 20)
                if isinstance(event, events.LinkNeedsReauth):
                    break
            assert event.target == "chatter" and event.account == "alice"
            assert "refused" in event.reason
            assert host.target("chatter").state is TargetState.NEEDS_REAUTH
            link = await host.link("chatter")
            assert link is not None and link.state is LinkState.NEEDS_REAUTH
            await host.set_presence("away", "still here", targets=["arena-chat"])
            while True:  # the other target goes on, on the same iterator
                event = await asyncio.wait_for(anext(stream), 20)
                if isinstance(event, events.BuddyPresence) and event.target == "arena-chat":
                    break
            assert event.own and event.status_text == "still here"
            c = await host.connect("chatter", answers("alice"))  # signing in again repairs it
            assert c.branch is Branch.REAUTH
        assert any(isinstance(e, events.LinkNeedsReauth) for e in seen)  # callbacks too
