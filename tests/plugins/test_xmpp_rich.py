"""Rich presence and invites over XMPP, against real servers on 127.0.0.1: Prosody (its
fixture loads ``mod_pep``) and the session's ejabberd (its fixture has no ``mod_pubsub``: a
server without PEP).

On Prosody alice's activity reaches bob structured (XEP-0108 User Activity over PEP with the
interapp form inside) — as an ``activity`` event, on ``presence`` events and on
``Buddy.activity`` — and a plain slixmpp client (``xmpp_kit.raw_client``, independent of the
plug-in) reads the readable XEP-0108 text from alice's PEP node. On ejabberd the plug-in finds
no PEP and the activity is the readable presence status (plus the presence extension another
interapp user reads). An invite round trip on each: bob gets an ``invite`` event with the
structured form and a readable fallback body holding the join link, accepts, and alice gets the
``invite_answer``; a later session finds invites in the archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from xmpp_kit import raw_client

from interapp.errors import InviteClosed
from interapp.plugins.contract import InviteState, PluginEvent, TargetConfig
from interapp.plugins.xmpp import PLUGIN
from interapp.plugins.xmpp.client import XmppPlugin
from interapp.plugins.xmpp.demo import make_buddies
from interapp.plugins.xmpp.rich import (
    NS_ACTIVITY,
    NS_USER_ACTIVITY,
    activity_element,
    invite_parts,
    parse_user_activity,
    pep_activities,
)
from interapp.presence import Activity, Join, Party
from interapp.secret import Secret
from interapp.testing.ejabberd import EjabberdServer
from interapp.testing.prosody import ProsodyServer

pytest_plugins = ["interapp.testing.ejabberd"]
pytestmark = pytest.mark.anyio

ARENA = Activity(name="Arena", details="Ranked 2v2", state="level 7",
                 party=Party(id="p1", size=2, max=4),
                 started_at=datetime.now(UTC) - timedelta(minutes=12),
                 join=Join("https://arena.example/join/p1"))


#: render_activity(ARENA) at any time (the elapsed minutes depend on when the module loaded)
READABLE = re.compile(r"Arena · Ranked 2v2 · level 7 · 2/4 · \d+ min")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    with ProsodyServer(tmp_path_factory.mktemp("prosody-rich")) as server:
        yield server


Server = ProsodyServer | EjabberdServer


@pytest.fixture(params=["prosody", "ejabberd"])
def server(request: pytest.FixtureRequest) -> Server:
    found: Server = request.getfixturevalue(request.param)
    return found


def account(server: Server) -> tuple[str, str]:
    password = secrets.token_urlsafe(12)
    return server.register(f"u{secrets.token_hex(5)}", password), password


@contextlib.asynccontextmanager
async def plugin(server: Server, who: tuple[str, str]) -> AsyncIterator[XmppPlugin]:
    p = XmppPlugin(TargetConfig(name="xmpp-rich", plugin="xmpp", server=server.url))
    try:
        await p.login({"username": who[0], "password": Secret(who[1])})
        yield p
    finally:
        await p.close()


@contextlib.asynccontextmanager
async def collect(p: XmppPlugin) -> AsyncIterator[asyncio.Queue[PluginEvent]]:
    queue: asyncio.Queue[PluginEvent] = asyncio.Queue()

    async def pump() -> None:
        async for event in p.events(None):
            await queue.put(event)

    task = asyncio.create_task(pump())
    try:
        await asyncio.sleep(0.3)
        yield queue
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def next_event(queue: asyncio.Queue[PluginEvent], match: Callable[[PluginEvent], bool],
                     limit: float = 10.0) -> PluginEvent:
    async def find() -> PluginEvent:
        while True:
            event = await queue.get()
            if match(event):
                return event

    return await asyncio.wait_for(find(), limit)


def test_spec_declares_capabilities() -> None:
    assert PLUGIN.activity == "structured" and PLUGIN.invites == "message"
    assert PLUGIN.capabilities()["activity"] == "structured"


def test_activity_xml_round_trip_and_foreign_activity() -> None:
    el = activity_element(ARENA)
    parsed = parse_user_activity(el)
    assert parsed.structured and parsed.activity == ARENA
    assert el.findtext(f"{{{NS_USER_ACTIVITY}}}text", "").startswith("Arena · Ranked 2v2")
    assert el.find(f".//{{{NS_ACTIVITY}}}activity") is not None
    cleared = parse_user_activity(activity_element(None))
    assert cleared.activity is None
    # another client's User Activity (no interapp form): its text becomes the name
    foreign = ET.fromstring(f"<activity xmlns='{NS_USER_ACTIVITY}'><relaxing><gaming/>"
                            "</relaxing><text>Playing chess</text></activity>")
    got = parse_user_activity(foreign)
    assert not got.structured and got.activity == Activity(name="Playing chess")
    bare = ET.fromstring(f"<activity xmlns='{NS_USER_ACTIVITY}'><working><coding/>"
                         "</working></activity>")
    assert parse_user_activity(bare).activity == Activity(name="working: coding")
    # malformed interapp JSON: the readable part still counts, never an error
    bad = ET.fromstring(f"<activity xmlns='{NS_USER_ACTIVITY}'><relaxing><gaming>"
                        f"<activity xmlns='{NS_ACTIVITY}'>{{\"party\": 5}}</activity></gaming>"
                        "</relaxing><text>Arena</text></activity>")
    assert parse_user_activity(bad) == type(got)(Activity(name="Arena"), False)
    # a notification with a retraction is a cleared activity
    note = ET.fromstring("<message xmlns='jabber:client'><event xmlns="
                         "'http://jabber.org/protocol/pubsub#event'><items node="
                         f"'{NS_USER_ACTIVITY}'><retract id='current'/></items></event>"
                         "</message>")
    assert [a.activity for a in pep_activities(note)] == [None]
    msg = ET.fromstring("<message xmlns='jabber:client'><body>hi</body><invite xmlns="
                        "'urn:interapp:invite:0'>not json</invite></message>")
    assert invite_parts(msg) is None


async def test_activity_reaches_buddy_structured_over_pep(prosody: ProsodyServer) -> None:
    alice, bob = account(prosody), account(prosody)
    await make_buddies(prosody.url, alice, bob)
    async with plugin(prosody, alice) as pa, plugin(prosody, bob) as pb, \
            collect(pb) as events, raw_client(prosody, bob, resource="other") as other:
        await asyncio.sleep(0.3)
        await pa.set_activity(ARENA)
        assert pa._pep is True  # Prosody offers PEP: the structured path was taken
        event = await next_event(events, lambda e: e.type == "activity"
                                 and e.data["username"] == alice[0])
        assert Activity.from_json(event.data["activity"]) == ARENA
        # bob's one-shot view of his buddies carries it too
        buddies = {b.username: b for b in await pb.buddies()}
        assert buddies[alice[0]].activity == ARENA
        async with plugin(prosody, bob) as fresh:  # a new session asks alice's PEP node
            assert {b.username: b.activity for b in await fresh.buddies()}[alice[0]] == ARENA
        # a plain XMPP client reads the readable XEP-0108 text from alice's PEP node
        iq = other.make_iq_get(ito=alice[0])
        iq.append(ET.fromstring("<pubsub xmlns='http://jabber.org/protocol/pubsub'><items "
                                f"node='{NS_USER_ACTIVITY}'/></pubsub>"))
        resp = await iq.send(timeout=10)
        ns = f"{{{NS_USER_ACTIVITY}}}"
        item = resp.xml.find(f".//{ns}activity")
        assert item is not None and item.find(f"{ns}relaxing/{ns}gaming") is not None
        text = str(item.findtext(f"{ns}text"))
        assert READABLE.fullmatch(text), text
        # the status text stays the user's own with PEP
        await pa.set_presence("away", "brb")
        pres = await next_event(events, lambda e: e.type == "presence"
                                and e.data["state"] == "away")
        assert pres.data["status_text"] == "brb"
        assert Activity.from_json(pres.data["activity"]) == ARENA
        await pa.set_activity(None)
        cleared = await next_event(events, lambda e: e.type == "activity")
        assert cleared.data["activity"] is None
        assert {b.username: b.activity for b in await pb.buddies()}[alice[0]] is None


async def test_activity_without_pep_is_readable_status(ejabberd: EjabberdServer) -> None:
    alice, bob = account(ejabberd), account(ejabberd)
    await make_buddies(ejabberd.url, alice, bob)
    async with plugin(ejabberd, alice) as pa, plugin(ejabberd, bob) as pb, \
            collect(pb) as events:
        await pa.set_activity(ARENA)  # never an error: the network gets the readable text
        assert pa._pep is False  # found by disco: this ejabberd has no PEP
        pres = await next_event(events, lambda e: e.type == "presence"
                                and e.data["username"] == alice[0]
                                and e.data["status_text"] != "")
        assert READABLE.fullmatch(pres.data["status_text"]), pres.data["status_text"]
        # another interapp user still reads it structured, from the presence extension
        assert Activity.from_json(pres.data["activity"]) == ARENA
        assert {b.username: b.activity for b in await pb.buddies()}[alice[0]] == ARENA
        await pa.set_presence("busy", "in a match")
        busy = await next_event(events, lambda e: e.type == "presence"
                                and e.data["state"] == "busy")
        assert busy.data["status_text"].startswith("in a match — Arena · Ranked 2v2")
        await pa.set_activity(None)
        plain = await next_event(events, lambda e: e.type == "presence"
                                 and e.data["status_text"] == "in a match")
        assert plain.data["activity"] is None


async def test_invite_round_trip(server: Server) -> None:
    prosody = server  # either server: invites need messages only
    alice, bob = account(prosody), account(prosody)
    await make_buddies(prosody.url, alice, bob)
    async with plugin(prosody, alice) as pa, plugin(prosody, bob) as pb, \
            collect(pa) as alice_events, collect(pb) as bob_events:
        sent = await pa.invite(bob[0], activity=ARENA, join_url=None, message="one more?",
                               client_invite_id="c-1")
        assert sent.from_user == alice[0] and sent.to_user == bob[0]
        assert sent.state is InviteState.PENDING
        again = await pa.invite(bob[0], activity=ARENA, join_url=None, message="one more?",
                                client_invite_id="c-1")
        assert again.id == sent.id  # the same client_invite_id: the same invite
        got = await next_event(bob_events, lambda e: e.type == "invite")
        invite = got.data["invite"]
        assert invite["id"] == sent.id and invite["from"] == alice[0] and invite["to"] == bob[0]
        assert Activity.from_json(invite["activity"]) == ARENA
        assert "https://arena.example/join/p1" in got.data["body"]  # the readable fallback
        assert got.data["body"].startswith("Join me in Arena")
        assert [i.id for i in await pb.invites()] == [sent.id]
        answered = await pb.answer_invite(sent.id, True)
        assert answered.state is InviteState.ACCEPTED
        answer = await next_event(alice_events, lambda e: e.type == "invite_answer")
        assert answer.data["invite"]["id"] == sent.id
        assert answer.data["invite"]["state"] == "accepted"
        with pytest.raises(InviteClosed):
            await pb.answer_invite(sent.id, False)
        # no second invite event for the retried send
        await asyncio.sleep(0.3)
        assert not any(e.type == "invite" for e in drain(bob_events))
        # a new session (another process) finds the answered invite in the archive
        async with plugin(prosody, bob) as fresh:
            assert await fresh.invites() == []
            with pytest.raises(InviteClosed):
                await fresh.answer_invite(sent.id, True)
        second = await pa.invite(bob[0], activity=None, join_url="arena://match/9",
                                 message="", client_invite_id="c-2")
        async with plugin(prosody, bob) as later:
            assert [i.id for i in await later.invites()] == [second.id]
            declined = await later.answer_invite(second.id, False)
            assert declined.state is InviteState.DECLINED
        answer = await next_event(alice_events, lambda e: e.type == "invite_answer")
        assert answer.data["invite"]["state"] == "declined"


async def test_unanswered_invite_expires(prosody: ProsodyServer) -> None:
    alice, bob = account(prosody), account(prosody)
    await make_buddies(prosody.url, alice, bob)
    async with plugin(prosody, alice) as pa, plugin(prosody, bob) as pb, \
            collect(pa) as alice_events:
        sent = await pa.invite(bob[0], activity=ARENA, join_url=None, message="",
                               client_invite_id="soon")
        # as if sent ten minutes ago: it expires in a second
        pa._book.record_sent(dataclasses.replace(
            sent, expires_at=datetime.now(UTC) + timedelta(seconds=1)))
        gone = await next_event(alice_events, lambda e: e.type == "invite_answer")
        assert gone.data["invite"]["id"] == sent.id
        assert gone.data["invite"]["state"] == "expired"
        assert await pa.invites() == []
        # bob answers too late: alice's session does not take it as an answer
        await pb.answer_invite(sent.id, True)
        late = await next_event(alice_events, lambda e: e.data.get("from") == bob[0])
        assert late.type == "message" and late.data["body"].startswith("Accepted your invite")


def drain(queue: asyncio.Queue[PluginEvent]) -> list[PluginEvent]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out
