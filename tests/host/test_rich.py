"""Rich presence and invites through the host SDK, end to end against real interapp servers:
arena is the local application, chatter a target with its own accounts. alice sets her
activity in the local app and bob, on chatter, sees it structured (his buddy list and a
``BuddyActivity`` event); invites go round (sent, received, answered, expired, idempotent,
buddies only); a text-only network gets the readable text instead, never an error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest

from interapp.host import (
    Activity,
    Host,
    InvalidActivity,
    InvalidInvite,
    InviteClosed,
    InviteState,
    Join,
    Party,
    Scripted,
    Secret,
    events,
    render_activity,
)
from interapp.testing.servers import ThreadedServer
from interapp.testing.textonly import SPEC as TEXT_ONLY

PW = {"alice@arena": "arena-pw-1", "bob@arena": "arena-pw-2", "carol@arena": "arena-pw-3",
      "alice@chatter": "chatter-pw-1", "bob@chatter": "bob-pw-1", "carol@chatter": "carol-pw"}
E = TypeVar("E", bound=events.Event)
STARTED = datetime.now(UTC) - timedelta(minutes=12, seconds=5)
ARENA = Activity(name="Arena", details="Ranked 2v2", party=Party(id="p-7", size=2, max=4),
                 started_at=STARTED, join=Join("https://arena.example/join/7"))


@dataclass
class Apps:
    arena: ThreadedServer
    chatter: ThreadedServer
    clients: dict[str, tuple[str, Secret]]

    async def host(self, user: str, *, plugin: str = "interapp") -> Host:
        host = await Host.open(memory=True)
        if plugin == TEXT_ONLY.name:
            host._registry.specs[TEXT_ONLY.name] = TEXT_ONLY  # a text-only network
        cid, secret = self.clients["arena"]
        await host.set_local(self.arena.url, client_id=cid, client_secret=secret)
        await host.sign_in(user, PW[f"{user}@arena"])
        tid, tsecret = self.clients["chatter"]
        await host.add_target("chatter", plugin=plugin, server=self.chatter.url, client_id=tid,
                              client_secret=tsecret, account_system="separate")
        await host.connect("chatter", Scripted({"username": user,
                                                "password": PW[f"{user}@chatter"]}))
        return host

    def api(self, user: str, method: str, path: str, **kw: Any) -> httpx.Response:
        """A call to chatter's /v1 as ``user`` from another client (not through a host)."""
        cid, secret = self.clients["chatter"]
        with httpx.Client(base_url=self.chatter.url, timeout=10) as http:
            token = http.post("/oauth/token", auth=(cid, secret.reveal()), data={
                "grant_type": "password", "username": user,
                "password": PW[f"{user}@chatter"]}).json()["access_token"]
            return http.request(method, path, headers={"Authorization": f"Bearer {token}"},
                                **kw)


def _seed(server: ThreadedServer, app: str) -> tuple[str, Secret]:
    from interapp.server import accounts, passwords, social
    from interapp.server.storage import Database

    async def work() -> tuple[str, Secret]:
        db = Database.open(server.db_url)
        try:
            async with db.begin() as conn:
                made = [await accounts.create_user(conn, u, password_hash=passwords.hash_sync(
                    Secret(PW[f"{u}@{app}"]))) for u in ("alice", "bob", "carol")]
                await social.make_buddies(conn, made[0], made[1])  # carol is nobody's buddy
                cid, secret = await accounts.create_client(conn, "game", public=False)
                assert secret is not None
                return cid, secret
        finally:
            await db.close()

    return server.call(work)


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    folder = tmp_path_factory.mktemp("rich")
    arena = ThreadedServer("arena", folder / "arena.db").start()
    chatter = ThreadedServer("chatter", folder / "chatter.db").start()
    try:
        yield Apps(arena, chatter, {"arena": _seed(arena, "arena"),
                                    "chatter": _seed(chatter, "chatter")})
    finally:
        arena.stop()
        chatter.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def next_of(stream: AsyncIterator[events.Event], kind: type[E], timeout: float = 10,
                  where: Callable[[E], bool] = lambda e: True, **match: Any) -> E:
    """The next event of class ``kind`` whose fields have the values in ``match``."""

    async def find() -> E:
        async for event in stream:
            if isinstance(event, kind) and where(event) and all(
                    getattr(event, k) == v for k, v in match.items()):
                return event
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(find(), timeout)


@pytest.mark.anyio
async def test_alices_activity_reaches_bob_structured(apps: Apps) -> None:
    async with await apps.host("alice") as alice, await apps.host("bob") as bob:
        async with bob.events() as stream:
            await asyncio.sleep(0.3)
            result = await alice.set_activity(ARENA)
            assert result.targets == ("chatter",) and result.errors == {}
            assert result.carried == {"chatter": "native"}
            seen = await next_of(stream, events.BuddyActivity, username="alice")
            assert seen.activity == ARENA and seen.target == "chatter" and not seen.own
            assert seen.text == "Arena · Ranked 2v2 · 2/4 · 12 min"
            assert seen.to_dict()["activity"] == ARENA.to_json()
            (buddy,) = await bob.buddies("chatter")
            assert buddy.username == "alice" and buddy.activity == ARENA
            assert buddy.to_dict()["activity"]["party"] == {"id": "p-7", "size": 2, "max": 4}
            assert render_activity(buddy.activity) == "Arena · Ranked 2v2 · 2/4 · 12 min"
            # the same activity again is no event; a presence change keeps the activity
            await alice.set_activity(ARENA)
            await alice.set_presence("busy", "in a match")
            presence = await next_of(stream, events.BuddyPresence, username="alice")
            assert presence.state == "busy"
            (buddy,) = await bob.buddies("chatter")
            assert (buddy.presence, buddy.activity) == ("busy", ARENA)
            # cleared
            await alice.set_activity(None)
            cleared = await next_of(stream, events.BuddyActivity, username="alice")
            assert cleared.activity is None
        (buddy,) = await bob.buddies("chatter")
        assert buddy.activity is None and buddy.presence == "busy"


@pytest.mark.anyio
async def test_bad_activity_input_is_refused_before_anything_is_sent(apps: Apps) -> None:
    with pytest.raises(InvalidActivity):
        Activity(name="x" * 129)
    with pytest.raises(InvalidActivity):
        Activity(join=Join("javascript:alert(1)"))
    async with await apps.host("alice") as alice:
        await alice.set_activity(Activity(name="Arena"))
        with pytest.raises(InvalidInvite):
            await alice.invite("chatter", "bob", join_url="data:text/html,x")
        with pytest.raises(InvalidInvite):
            await alice.invite("chatter", "bob", join_url="https://a.example", message="m" * 501)
    me = apps.api("alice", "GET", "/v1/me").json()
    assert me["activity"]["name"] == "Arena"
    assert apps.api("bob", "GET", "/v1/invites").json() == {"invites": []}


@pytest.mark.anyio
async def test_invite_round_trip(apps: Apps) -> None:
    async with await apps.host("alice") as alice, await apps.host("bob") as bob, \
            alice.events() as a_stream, bob.events() as b_stream:
        await asyncio.sleep(0.3)
        sent = await alice.invite("chatter", "bob", activity=ARENA, message="one more?",
                                  client_invite_id="host-inv-1")
        assert (sent.from_user, sent.to_user, sent.state, sent.outgoing) == (
            "alice", "bob", InviteState.PENDING, True)
        assert sent.url == "https://arena.example/join/7"
        assert timedelta(minutes=9) < sent.expires_at - sent.created_at <= timedelta(
            minutes=10)
        got = await next_of(b_stream, events.InviteReceived)
        assert got.invite.id == sent.id and not got.invite.outgoing
        assert got.invite.activity == ARENA and got.invite.message == "one more?"
        assert got.to_dict()["invite"]["from"] == "alice"
        # a retry with the same id is the same invite, and bob hears of it once
        again = await alice.invite("chatter", "bob", activity=ARENA, message="one more?",
                                   client_invite_id="host-inv-1")
        assert again.id == sent.id
        listed = await bob.invites()
        assert [i.id for i in listed] == [sent.id] and listed.problems == {}
        assert [i.id for i in await alice.invites("chatter")] == [sent.id]
        accepted = await bob.answer_invite("chatter", sent.id, True)
        assert accepted.state is InviteState.ACCEPTED and not accepted.outgoing
        answer = await next_of(a_stream, events.InviteAnswered)
        assert answer.invite.id == sent.id and answer.invite.state is InviteState.ACCEPTED
        assert answer.invite.outgoing
        with pytest.raises(InviteClosed):
            await bob.answer_invite("chatter", sent.id, False)
        assert await bob.invites() == []
        # a join link, declined
        link = await bob.invite("chatter", "alice", join_url="steam://joinlobby/1/2")
        received = await next_of(a_stream, events.InviteReceived)
        assert received.invite.url == "steam://joinlobby/1/2"
        declined = await alice.answer_invite("chatter", link.id, False)
        assert declined.state is InviteState.DECLINED
        back = await next_of(b_stream, events.InviteAnswered,
                             where=lambda e: e.invite.id == link.id)
        assert back.invite.state is InviteState.DECLINED and back.invite.outgoing
        later = []
        while (event := b_stream.get_nowait()) is not None:
            later.append(event)
        assert not [e for e in later if isinstance(e, events.InviteReceived)]  # heard once


@pytest.mark.anyio
async def test_an_expired_invite_cannot_be_accepted(apps: Apps) -> None:
    short = apps.api("bob", "POST", "/v1/invites", json={
        "to": "alice", "join_url": "https://arena.example/j/9", "expires_in": 1})
    assert short.status_code == 201, short.text
    async with await apps.host("alice") as alice, await apps.host("bob") as bob, \
            bob.events() as b_stream:
        await asyncio.sleep(1.3)
        assert short.json()["id"] not in [i.id for i in await alice.invites()]
        expired = await next_of(b_stream, events.InviteAnswered)
        assert expired.invite.state is InviteState.EXPIRED
        with pytest.raises(InviteClosed):
            await alice.answer_invite("chatter", short.json()["id"], True)


@pytest.mark.anyio
async def test_only_buddies_can_be_invited(apps: Apps) -> None:
    from interapp.errors import Forbidden

    async with await apps.host("alice") as alice:
        with pytest.raises(Forbidden):
            await alice.invite("chatter", "carol", join_url="https://arena.example/j/1")
    assert apps.api("carol", "GET", "/v1/invites").json() == {"invites": []}


@pytest.mark.anyio
async def test_a_text_only_network_gets_readable_text_never_an_error(apps: Apps) -> None:
    apps.api("alice", "PUT", "/v1/presence", json={"activity": None})  # from the tests before
    async with await apps.host("alice", plugin=TEXT_ONLY.name) as alice, \
            await apps.host("bob") as bob:
        await alice.set_presence("online", "around")
        async with bob.events() as stream:
            await asyncio.sleep(0.3)
            result = await alice.set_activity(ARENA)
            assert result.carried == {"chatter": "text"} and result.errors == {}
            presence = await next_of(stream, events.BuddyPresence, username="alice")
            assert presence.status_text == "Arena · Ranked 2v2 · 2/4 · 12 min"
            (buddy,) = await bob.buddies("chatter")
            assert buddy.status_text == presence.status_text and buddy.activity is None
            # an invite becomes a message with the readable text and the link
            sent = await alice.invite("chatter", "bob", message="come")
            assert sent.activity == ARENA and sent.outgoing
            message = await next_of(stream, events.MessageReceived)
            assert message.message.body == (
                "Join me in Arena · Ranked 2v2 · 2/4 · 12 min: https://arena.example/join/7"
                " — come")
            assert await alice.invites() == []  # a text network holds no invites
            # cleared: the status text is the one set with the presence again
            await alice.set_activity(None)
            back = await next_of(stream, events.BuddyPresence, username="alice")
            assert back.status_text == "around"


@pytest.mark.anyio
async def test_the_activity_is_shown_again_after_a_reconnect(apps: Apps) -> None:
    async with await apps.host("alice") as alice:
        await alice.set_activity(ARENA)
        assert alice.activity("chatter") == ARENA
        # someone (another device) clears it; a reconnect of this host shows it again
        assert apps.api("alice", "PUT", "/v1/presence", json={"activity": None}).status_code \
            == 200
        await alice.connect("chatter", reconnect=True)
    assert apps.api("alice", "GET", "/v1/me").json()["activity"] == ARENA.to_json()


def test_a_game_loop_uses_it_through_blocking_host(apps: Apps) -> None:
    """BlockingHost (no asyncio in the caller): set the activity, invite, poll the answer."""
    from interapp.host.blocking import BlockingHost

    cid, secret = apps.clients["arena"]
    tid, tsecret = apps.clients["chatter"]
    with BlockingHost.open(memory=True) as alice:
        alice.set_local(apps.arena.url, client_id=cid, client_secret=secret)
        alice.sign_in("alice", PW["alice@arena"])
        alice.add_target("chatter", plugin="interapp", server=apps.chatter.url, client_id=tid,
                         client_secret=tsecret, account_system="separate")
        alice.connect("chatter", lambda request: {"username": "alice",
                                                  "password": PW["alice@chatter"]})
        result = alice.set_activity(Activity(name="Arena", details="Blocking 1v1"))
        assert result.carried == {"chatter": "native"}
        rows = apps.api("bob", "GET", "/v1/contacts").json()["contacts"]
        assert rows[0]["activity"]["details"] == "Blocking 1v1"
        sent = alice.invite("chatter", "bob", message="from the game loop")
        assert [i.id for i in alice.invites()] == [sent.id]
        alice.wait(0.5)  # the event stream is open: the answer arrives as an event
        answered = apps.api("bob", "POST", f"/v1/invites/{sent.id}/decline")
        assert answered.status_code == 200, answered.text
        seen: list[events.InviteAnswered] = []
        deadline = 50
        while not seen and deadline:
            seen = [e for e in alice.wait(0.2) if isinstance(e, events.InviteAnswered)]
            deadline -= 1
        assert seen and seen[0].invite.state is InviteState.DECLINED and seen[0].invite.outgoing
        alice.set_activity(None)
    assert apps.api("alice", "GET", "/v1/me").json()["activity"] is None
