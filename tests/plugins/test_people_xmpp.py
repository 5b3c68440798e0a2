"""One person across two networks: bob on chatter (an interapp server) and bob@localhost on a
real Prosody, merged by alice's host into one person.

The merged row shows the best presence of the two (bob is online on XMPP, offline on chatter);
after bob writes from his XMPP client, a message to the person goes over XMPP and reaches that
client; the merged history holds both networks' messages.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from xmpp_kit import raw_client, round_trip

from interapp.host import Host, PersonAccount, PresenceState, Scripted, Secret, events
from interapp.plugins.xmpp.demo import make_buddies
from interapp.testing.prosody import ProsodyServer
from interapp.testing.servers import ThreadedServer

PW = "pw-people-xmpp"


def _seed(server: ThreadedServer, users: tuple[str, ...]) -> tuple[str, Secret]:
    from interapp.server import accounts, passwords, social
    from interapp.server.storage import Database

    async def work() -> tuple[str, Secret]:
        db = Database.open(server.db_url)
        try:
            async with db.begin() as conn:
                made = [await accounts.create_user(
                    conn, u, display_name=u.title(),
                    password_hash=passwords.hash_sync(Secret(PW))) for u in users]
                for other in made[1:]:
                    await social.make_buddies(conn, made[0], other)
                cid, secret = await accounts.create_client(conn, "game", public=False)
                assert secret is not None
                return cid, secret
        finally:
            await db.close()

    return server.call(work)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[dict[str, ThreadedServer], dict[str, tuple[str, Secret]],
                                ProsodyServer]]:
    folder = tmp_path_factory.mktemp("people-xmpp")
    apps = {app: ThreadedServer(app, folder / f"{app}.db").start()
            for app in ("arena", "chatter")}
    try:
        clients = {"arena": _seed(apps["arena"], ("alice",)),
                   "chatter": _seed(apps["chatter"], ("alice", "bob"))}
        with ProsodyServer(folder / "prosody") as prosody:
            yield apps, clients, prosody
    finally:
        for s in apps.values():
            s.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _until(stream: Any, check: Any, timeout: float = 20) -> events.Event:
    while True:
        event = await asyncio.wait_for(anext(stream), timeout)
        if check(event):
            return event


@pytest.mark.anyio
async def test_bob_on_chatter_and_on_xmpp_is_one_person(servers: Any, tmp_path: Path) -> None:
    apps, clients, prosody = servers
    alice = (await asyncio.to_thread(prosody.register, "alice", PW), PW)
    bob = (await asyncio.to_thread(prosody.register, "bob", PW), PW)
    await make_buddies(prosody.url, alice, bob)
    key = base64.b64encode(os.urandom(32)).decode()
    async with raw_client(prosody, bob, resource="phone", pstatus="on my phone") as phone, \
            Host.open(tmp_path / "home", vault_key=key) as host:
        got: asyncio.Queue[Any] = asyncio.Queue()
        phone.add_event_handler("message", lambda m: got.put_nowait(m)
                                if m["type"] in ("chat", "normal") and m["body"] else None)
        await round_trip(phone)
        cid, secret = clients["arena"]
        await host.set_local(apps["arena"].url, client_id=cid, client_secret=secret)
        await host.sign_in("alice", PW)
        tid, tsecret = clients["chatter"]
        await host.add_target("chatter", plugin="interapp", server=apps["chatter"].url,
                              client_id=tid, client_secret=tsecret)
        await host.add_target("xmpp", plugin="xmpp", server=prosody.url, tls=False)
        await host.connect("chatter", Scripted({"username": "alice", "password": PW}))
        await host.connect("xmpp", Scripted({"username": alice[0], "password": PW}))

        suggested = await host.suggest_people()
        assert [set(s.accounts) for s in suggested] == [
            {PersonAccount("chatter", "bob"), PersonAccount("xmpp", bob[0])}]
        assert suggested[0].reason in ("same display name", "same user name")
        person = await host.merge_people("chatter:bob", f"xmpp:{bob[0]}", name="Bob")
        rows = await host.contacts()
        assert rows.problems == {}
        assert [c.name for c in rows] == ["Bob"]  # two buddies, one person: one row
        (row,) = rows
        assert (row.presence, row.target, row.user, row.status_text) == (
            PresenceState.ONLINE, "xmpp", bob[0], "on my phone")
        assert {(a.target, a.presence) for a in row.accounts} == {
            ("chatter", PresenceState.OFFLINE), ("xmpp", PresenceState.ONLINE)}

        async with host.events() as stream:
            await asyncio.sleep(0.5)
            await host.send("chatter", "bob", "are you on chatter?")
            await asyncio.sleep(1.1)  # XMPP stamps whole seconds: keep the order knowable
            phone.send_message(mto=alice[0], mbody="no, here on xmpp", mtype="chat")
            await _until(stream, lambda e: isinstance(e, events.MessageReceived)
                         and e.target == "xmpp" and not e.message.own)
            sent = await host.send_to_person(person, "ok, xmpp then")
            assert (sent.target, sent.recipient) == ("xmpp", bob[0])
            arrived = await asyncio.wait_for(got.get(), 15)
            assert arrived["body"] == "ok, xmpp then"
        merged = await host.person_history("Bob")
        mine = [(m.target, m.body) for m in merged]
        assert mine == [("chatter", "are you on chatter?"), ("xmpp", "no, here on xmpp"),
                        ("xmpp", "ok, xmpp then")], mine
