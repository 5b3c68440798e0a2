"""Rich presence and invites over Matrix, against the session's real Synapse.

alice's activity reaches bob readable (presence ``status_msg``, read by matrix-nio, an
independent client) and structured (the ``org.interapp.activity`` state event in their direct
room): an ``activity`` event from ``/sync``, ``presence`` events and ``Buddy.activity``. In a
room whose power levels refuse the state event it goes as a timeline event. An invite round
trip: bob gets an ``invite`` event with the structured form and the readable fallback body with
the join link (what nio sees), accepts, alice gets the ``invite_answer``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from nio import AsyncClient, PresenceGetResponse, RoomCreateResponse, RoomMessagesResponse

from interapp.errors import InviteClosed
from interapp.plugins.contract import InviteState, PluginEvent, TargetConfig
from interapp.plugins.matrix import PLUGIN
from interapp.plugins.matrix import client as matrix_client
from interapp.plugins.matrix.client import MatrixPlugin
from interapp.plugins.matrix.rich import (
    ACTIVITY_EVENT,
    INVITE_KEY,
    activity_from_event,
    invite_of_message,
    status_with_activity,
)
from interapp.presence import Activity, Join, Party, render_activity
from interapp.secret import Secret
from interapp.testing.synapse import SynapseServer

pytest_plugins = ["interapp.testing.synapse"]
pytestmark = pytest.mark.anyio

ARENA = Activity(name="Arena", details="Ranked 2v2", state="level 7",
                 party=Party(id="p1", size=2, max=4),
                 started_at=datetime.now(UTC) - timedelta(minutes=12),
                 join=Join("https://arena.example/join/p1"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class User:
    local: str
    password: str
    mxid: str
    device: str
    token: str


async def new_user(hs: SynapseServer) -> User:
    local, password = f"r_{secrets.token_hex(5)}", secrets.token_urlsafe(12)
    data = await hs.aregister(local, password)
    return User(local, password, data["user_id"], data["device_id"], data["access_token"])


@asynccontextmanager
async def logged_in(hs: SynapseServer, user: User) -> AsyncIterator[MatrixPlugin]:
    plugin = MatrixPlugin(TargetConfig(name="mx", plugin="matrix", server=hs.url,
                                       options={"sync_timeout": "5"}))
    try:
        await plugin.login({"username": user.local, "password": Secret(user.password)})
        yield plugin
    finally:
        await plugin.close()


def nio_client(hs: SynapseServer, user: User) -> AsyncClient:
    client = AsyncClient(hs.url, user.mxid)
    client.restore_login(user.mxid, user.device, user.token)
    return client


class Events:
    def __init__(self, plugin: MatrixPlugin, cursor: str | None = None) -> None:
        self.queue: asyncio.Queue[PluginEvent] = asyncio.Queue()
        self.unmatched: list[PluginEvent] = []  # what earlier next() calls passed over
        self.task = asyncio.create_task(self._pump(plugin, cursor))

    async def _pump(self, plugin: MatrixPlugin, cursor: str | None) -> None:
        async for event in plugin.events(cursor):
            await self.queue.put(event)

    async def next(self, match: Callable[[PluginEvent], bool], limit: float = 15.0
                   ) -> PluginEvent:
        for event in self.unmatched:
            if match(event):
                self.unmatched.remove(event)
                return event

        async def find() -> PluginEvent:
            while True:
                event = await self.queue.get()
                if match(event):
                    return event
                self.unmatched.append(event)

        return await asyncio.wait_for(find(), limit)


@asynccontextmanager
async def events(plugin: MatrixPlugin, cursor: str | None = None) -> AsyncIterator[Events]:
    stream = Events(plugin, cursor)
    try:
        if cursor is None:
            await asyncio.sleep(0.5)  # let "from now on" take its starting token
        yield stream
    finally:
        stream.task.cancel()
        await asyncio.gather(stream.task, return_exceptions=True)


async def befriend(a: MatrixPlugin, b: MatrixPlugin, b_user: User, a_user: User) -> None:
    await a.add_buddy(b_user.local)
    for _ in range(100):
        if any(x.username == a_user.mxid for x in await b.buddies()):
            break
        try:
            await b.accept_buddy(a_user.mxid)
            break
        except Exception:  # the invite is not visible yet
            await asyncio.sleep(0.1)
    for _ in range(100):
        if {x.username: x.subscription for x in await a.buddies()}.get(b_user.mxid) == "both":
            return
        await asyncio.sleep(0.1)
    raise AssertionError("never became buddies")


def test_spec_and_content_forms() -> None:
    assert PLUGIN.activity == "structured" and PLUGIN.invites == "message"
    assert status_with_activity("brb", ARENA).startswith("brb — Arena · Ranked 2v2")
    assert status_with_activity("", None) == ""
    ok = {"type": ACTIVITY_EVENT, "sender": "@a:x", "state_key": "@a:x",
          "content": {"activity": ARENA.to_json()}}
    assert activity_from_event(ok) == ("@a:x", ARENA)
    # someone else's state key, or a malformed activity: never read as anybody's
    assert activity_from_event({**ok, "state_key": "@b:x"}) is None
    assert activity_from_event({**ok, "content": {"activity": {"party": 3}}}) is None
    assert activity_from_event({**ok, "content": {}}) == ("@a:x", None)  # redacted: cleared
    assert invite_of_message({"msgtype": "m.text", "body": "x", INVITE_KEY: {"id": 1}}) is None


async def test_activity_reaches_buddy(matrix_synapse: SynapseServer) -> None:
    hs = matrix_synapse
    alice, bob = await new_user(hs), await new_user(hs)
    async with logged_in(hs, alice) as pa, logged_in(hs, bob) as pb:
        await befriend(pa, pb, bob, alice)
        await pa.set_presence("online", "brb")
        async with events(pb) as stream:
            await pa.set_activity(ARENA)
            got = await stream.next(lambda e: e.type == "activity"
                                    and e.data["username"] == alice.mxid)
            assert Activity.from_json(got.data["activity"]) == ARENA
            pres = await stream.next(lambda e: e.type == "presence"
                                     and e.data["username"] == alice.mxid
                                     and "Arena" in e.data["status_text"])
            assert pres.data["status_text"].startswith("brb — " + render_activity(ARENA)[:25])
            assert Activity.from_json(pres.data["activity"]) == ARENA
            buddies = {b.username: b for b in await pb.buddies()}
            assert buddies[alice.mxid].activity == ARENA
            # an independent Matrix client reads the readable form
            nio = nio_client(hs, bob)
            try:
                answer = await nio.get_presence(alice.mxid)
                assert isinstance(answer, PresenceGetResponse)
                assert "Arena · Ranked 2v2 · level 7 · 2/4" in (answer.status_msg or "")
            finally:
                await nio.close()
            # set_presence keeps the readable activity after the status text
            await pa.set_presence("away", "lunch")
            away = await stream.next(lambda e: e.type == "presence"
                                     and e.data["state"] == "away")
            assert away.data["status_text"].startswith("lunch — Arena")
            await pa.set_activity(None)
            cleared = await stream.next(lambda e: e.type == "activity")
            assert cleared.data["activity"] is None
            assert {b.username: b.activity for b in await pb.buddies()}[alice.mxid] is None


async def private_chat(hs: SynapseServer, bob: User, alice: User) -> None:
    """A DM made by matrix-nio with the private_chat preset (the invitee has power level 0)."""
    nb = nio_client(hs, bob)
    try:
        room = await nb.room_create(is_direct=True, invite=[alice.mxid])
        assert isinstance(room, RoomCreateResponse)
        na = nio_client(hs, alice)
        try:
            await na.join(room.room_id)
        finally:
            await na.close()
    finally:
        await nb.close()


@pytest.mark.parametrize("refused", [False, True], ids=["state-event", "timeline-event"])
async def test_activity_after_a_limited_sync_gap(matrix_synapse: SynapseServer, refused: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """bob resumes from a cursor older than alice's activity and more messages than one
    /sync timeline holds: the activity still arrives (from the answer's state part, or the
    filled gap), once, and every message too."""
    monkeypatch.setattr(matrix_client, "TIMELINE_LIMIT", 3)
    hs = matrix_synapse
    alice, bob = await new_user(hs), await new_user(hs)
    async with logged_in(hs, alice) as pa, logged_in(hs, bob) as pb:
        if refused:
            await private_chat(hs, bob, alice)
        else:
            await befriend(pa, pb, bob, alice)
        _, scan = await pb._scan()
        start = str(scan["next_batch"])
        await pa.set_activity(ARENA)
        for n in range(6):
            await pa.send(bob.mxid, f"gap {n}", f"g{n}")
        async with events(pb, start) as stream:
            got = await stream.next(lambda e: e.type == "activity")
            assert Activity.from_json(got.data["activity"]) == ARENA
            bodies = [(await stream.next(lambda e: e.type == "message")).data["body"]
                      for _ in range(6)]
            assert bodies == [f"gap {n}" for n in range(6)]
            await asyncio.sleep(0.5)
            assert not [e for e in stream.unmatched if e.type == "activity"]
            assert stream.queue.empty() or not any(
                stream.queue.get_nowait().type == "activity"
                for _ in range(stream.queue.qsize()))


async def test_activity_where_state_events_are_refused(matrix_synapse: SynapseServer) -> None:
    """A DM made by another client with the private_chat preset: the invitee may not send
    state events, so alice's activity goes as a timeline event, still read structured."""
    hs = matrix_synapse
    alice, bob = await new_user(hs), await new_user(hs)
    await private_chat(hs, bob, alice)
    async with logged_in(hs, alice) as pa, logged_in(hs, bob) as pb, events(pb) as stream:
        await pa.set_activity(ARENA)
        got = await stream.next(lambda e: e.type == "activity"
                                and e.data["username"] == alice.mxid)
        assert Activity.from_json(got.data["activity"]) == ARENA


async def test_invite_round_trip(matrix_synapse: SynapseServer) -> None:
    hs = matrix_synapse
    alice, bob = await new_user(hs), await new_user(hs)
    async with logged_in(hs, alice) as pa, logged_in(hs, bob) as pb:
        await befriend(pa, pb, bob, alice)
        async with events(pa) as alice_events, events(pb) as bob_events:
            sent = await pa.invite(bob.mxid, activity=ARENA, join_url=None,
                                   message="one more?", client_invite_id="c-1")
            again = await pa.invite(bob.mxid, activity=ARENA, join_url=None,
                                    message="one more?", client_invite_id="c-1")
            assert again.id == sent.id
            got = await bob_events.next(lambda e: e.type == "invite")
            invite = got.data["invite"]
            assert invite["id"] == sent.id and invite["from"] == alice.mxid
            assert invite["to"] == bob.mxid
            assert Activity.from_json(invite["activity"]) == ARENA
            assert got.data["body"].startswith("Join me in Arena")
            assert "https://arena.example/join/p1" in got.data["body"]
            assert [i.id for i in await pb.invites()] == [sent.id]
            # what a Matrix client without interapp sees: the readable body with the link
            nio = nio_client(hs, bob)
            try:
                page = await nio.room_messages(got.data["room_id"], start="", limit=5)
                assert isinstance(page, RoomMessagesResponse)
                bodies = [getattr(e, "body", "") for e in page.chunk]
                assert any("https://arena.example/join/p1" in b for b in bodies)
            finally:
                await nio.close()
            answered = await pb.answer_invite(sent.id, True)
            assert answered.state is InviteState.ACCEPTED
            answer = await alice_events.next(lambda e: e.type == "invite_answer")
            assert answer.data["invite"]["id"] == sent.id
            assert answer.data["invite"]["state"] == "accepted"
            with pytest.raises(InviteClosed):
                await pb.answer_invite(sent.id, False)
        # another session (process) of bob finds invites in the room's history
        second = await pa.invite(bob.mxid, activity=None, join_url="arena://match/9",
                                 message="", client_invite_id="c-2")
        async with logged_in(hs, bob) as fresh:
            assert [i.id for i in await fresh.invites()] == [second.id]
            with pytest.raises(InviteClosed):
                await fresh.answer_invite(sent.id, True)
            declined = await fresh.answer_invite(second.id, False)
            assert declined.state is InviteState.DECLINED


async def test_unanswered_invite_expires(matrix_synapse: SynapseServer) -> None:
    hs = matrix_synapse
    alice, bob = await new_user(hs), await new_user(hs)
    async with logged_in(hs, alice) as pa, logged_in(hs, bob) as pb:
        await befriend(pa, pb, bob, alice)
        async with events(pa) as alice_events:
            sent = await pa.invite(bob.mxid, activity=ARENA, join_url=None, message="",
                                   client_invite_id="soon")
            pa._book.record_sent(dataclasses.replace(
                sent, expires_at=datetime.now(UTC) + timedelta(seconds=1)))
            gone = await alice_events.next(lambda e: e.type == "invite_answer", limit=10)
            assert gone.data["invite"]["state"] == "expired"
            assert await pa.invites() == []
