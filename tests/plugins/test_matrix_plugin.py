"""Matrix-specific behaviour of the ``matrix`` plug-in, against the session's real Synapse.

Direct-room discovery (``m.direct`` and unnamed two-person rooms), buddy requests, presence both
ways (with matrix-nio as an independent client), history order, idempotent sends, exact event
cursors (mid-answer resume, ``limited`` gaps), error and rate-limit mapping, and what the
stored credential holds.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from nio import AsyncClient, PresenceGetResponse, RoomCreateResponse, RoomPreset

from interapp.errors import ConfigError, ConnectionLost, NeedsReauth, RateLimited, Unauthorized
from interapp.plugins.contract import PluginEvent, TargetConfig
from interapp.plugins.matrix import PLUGIN
from interapp.plugins.matrix import client as matrix_client
from interapp.plugins.matrix.client import MatrixPlugin, homeserver_url
from interapp.plugins.matrix.demo import prepare_demo
from interapp.plugins.matrix.sync import Position
from interapp.secret import Secret
from interapp.testing.servers import free_port
from interapp.testing.synapse import SYNAPSE_VENV_ENV, SynapseServer

pytest_plugins = ["interapp.testing.synapse"]
pytestmark = pytest.mark.anyio


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


@pytest.fixture
def hs(matrix_synapse: SynapseServer) -> SynapseServer:
    return matrix_synapse


async def new_user(hs: SynapseServer, prefix: str = "u") -> User:
    local, password = f"{prefix}_{secrets.token_hex(5)}", secrets.token_urlsafe(12)
    data = await hs.aregister(local, password)
    return User(local, password, data["user_id"], data["device_id"], data["access_token"])


def target(hs: SynapseServer, **options: str) -> TargetConfig:
    return TargetConfig(name="mx", plugin="matrix", server=hs.url, options=options)


@asynccontextmanager
async def logged_in(hs: SynapseServer, user: User, **options: str
                    ) -> AsyncIterator[MatrixPlugin]:
    plugin = MatrixPlugin(target(hs, **options))
    try:
        await plugin.login({"username": user.local, "password": Secret(user.password)})
        yield plugin
    finally:
        await plugin.close()


def nio_client(hs: SynapseServer, user: User) -> AsyncClient:
    client = AsyncClient(hs.url, user.mxid)
    client.restore_login(user.mxid, user.device, user.token)
    return client


async def nio_dm(hs: SynapseServer, a: User, b: User, *, name: str | None = None,
                 invite: tuple[User, ...] = ()) -> str:
    """A room made by matrix-nio (which never writes m.direct), joined by everyone invited."""
    ca = nio_client(hs, a)
    others = (b, *invite)
    try:
        room = await ca.room_create(is_direct=name is None, name=name,
                                    invite=[u.mxid for u in others],
                                    preset=RoomPreset.trusted_private_chat)
        assert isinstance(room, RoomCreateResponse), room
        for user in others:
            cu = nio_client(hs, user)
            try:
                await cu.join(room.room_id)
            finally:
                await cu.close()
        return str(room.room_id)
    finally:
        await ca.close()


class Events:
    """A plug-in's event stream collected in the background."""

    def __init__(self, plugin: MatrixPlugin, cursor: str | None) -> None:
        self.queue: asyncio.Queue[PluginEvent] = asyncio.Queue()
        self.task = asyncio.create_task(self._pump(plugin, cursor))

    async def _pump(self, plugin: MatrixPlugin, cursor: str | None) -> None:
        async for event in plugin.events(cursor):
            await self.queue.put(event)

    async def next(self, match: Callable[[PluginEvent], bool] = lambda e: True,
                   limit: float = 15.0) -> PluginEvent:
        async def find() -> PluginEvent:
            while True:
                event = await self.queue.get()
                if match(event):
                    return event

        return await asyncio.wait_for(find(), limit)

    async def quiet(self, seconds: float) -> list[PluginEvent]:
        await asyncio.sleep(seconds)
        return [self.queue.get_nowait() for _ in range(self.queue.qsize())]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@asynccontextmanager
async def events(plugin: MatrixPlugin, cursor: str | None = None) -> AsyncIterator[Events]:
    stream = Events(plugin, cursor)
    try:
        if cursor is None:
            await asyncio.sleep(0.3)  # let "from now on" take its starting token
        yield stream
    finally:
        await stream.stop()


async def current_token(plugin: MatrixPlugin) -> str:
    _, scan = await plugin._scan()
    return str(scan["next_batch"])


def is_message(body: str) -> Callable[[PluginEvent], bool]:
    return lambda e: e.type == "message" and e.data.get("body") == body


# --- login and credentials -------------------------------------------------------------------


async def test_spec_is_light_and_valid() -> None:
    PLUGIN.check("matrix")
    assert PLUGIN.supports_assertion and PLUGIN.supports_revocation
    assert not PLUGIN.supports_refresh
    assert [f.name for f in PLUGIN.account_fields] == ["username", "password"]
    assert PLUGIN.load() is MatrixPlugin


async def test_credential_keeps_the_token_never_the_password(hs: SynapseServer) -> None:
    alice = await new_user(hs)
    plugin = MatrixPlugin(target(hs))
    try:
        login = await plugin.login({"username": alice.local, "password": Secret(alice.password)})
    finally:
        await plugin.close()
    cred = login.credential
    assert cred.kind == "matrix_session"
    assert set(cred.fields) == {"access_token", "device_id", "user_id", "homeserver"}
    assert cred.get("user_id") == alice.mxid == login.remote_account_id
    assert alice.password not in cred.to_json().decode()
    assert alice.password not in repr(cred)
    assert cred.get("access_token") not in repr(cred)


async def test_login_takes_a_localpart_or_a_full_mxid(hs: SynapseServer) -> None:
    alice = await new_user(hs)
    for name in (alice.local, alice.mxid, f"  {alice.mxid} "):
        async with logged_in(hs, User(name, alice.password, "", "", "")) as plugin:
            assert plugin.user_id == alice.mxid


async def test_wrong_password_is_needs_reauth_and_unknown_token_is_unauthorized(
        hs: SynapseServer) -> None:
    alice = await new_user(hs)
    plugin = MatrixPlugin(target(hs))
    try:
        with pytest.raises(NeedsReauth, match="M_FORBIDDEN"):
            await plugin.login({"username": alice.local, "password": Secret("nope")})
        login = await plugin.login({"username": alice.local,
                                    "password": Secret(alice.password)})
        await plugin.revoke(login.credential)
        with pytest.raises(Unauthorized, match="M_UNKNOWN_TOKEN"):
            await plugin.open(login.credential)
        await plugin.revoke(login.credential)  # revoking a dead token is not an error
    finally:
        await plugin.close()


async def test_unreachable_homeserver_is_connection_lost() -> None:
    plugin = MatrixPlugin(TargetConfig(name="gone", plugin="matrix",
                                       server=f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(ConnectionLost):
            await plugin.login({"username": "alice", "password": Secret("x")})
    finally:
        await plugin.close()


async def test_tls_by_default_off_loopback_and_audience_option(hs: SynapseServer) -> None:
    def url(server: str, tls: bool | None = None) -> str:
        return homeserver_url(TargetConfig(name="x", plugin="matrix", server=server, tls=tls))

    assert url("http://127.0.0.1:8008") == "http://127.0.0.1:8008"
    assert url("http://localhost:8008/") == "http://localhost:8008"
    assert url("http://matrix.example.org") == "https://matrix.example.org"
    assert url("http://matrix.example.org", tls=False) == "http://matrix.example.org"
    assert url("http://127.0.0.1:8008", tls=True) == "https://127.0.0.1:8008"
    plugin = MatrixPlugin(target(hs))
    other = MatrixPlugin(target(hs, jwt_audience="https://chat.example.org/"))
    try:
        assert await plugin.audience() == hs.url
        assert await other.audience() == "https://chat.example.org"
    finally:
        await plugin.close()
        await other.close()


async def test_cursor_encoding_round_trips_and_tolerates_garbage() -> None:
    mid = Position("s9_3_0", {"!room": "$event"}, {"p|@bob:x|away|lunch"})
    again = Position.decode(mid.encode())
    assert (again.since, again.rooms, again.keys) == (mid.since, mid.rooms, mid.keys)
    assert Position("s9_3_0").encode() == "s9_3_0"          # nothing delivered: the plain token
    assert Position.decode("s9_3_0").since == "s9_3_0"
    assert Position.decode(None).since is None
    assert Position.decode("mx1.%%%not-base64").since is None  # unreadable: from now on


# --- buddies -------------------------------------------------------------------------------------


async def test_direct_room_discovery(hs: SynapseServer) -> None:
    """m.direct rooms and unnamed two-person rooms are DMs; groups and named rooms are not."""
    alice, bob, carol, dave, erin = [await new_user(hs, p) for p in
                                     ("alice", "bob", "carol", "dave", "erin")]
    await nio_dm(hs, alice, bob)                                  # unnamed 1:1, no m.direct
    await nio_dm(hs, alice, carol, name="Team", invite=(dave,))   # a group
    await nio_dm(hs, alice, erin, name="Book club")               # named, two people
    async with logged_in(hs, alice) as plugin:
        names = {b.username: b for b in await plugin.buddies()}
        assert set(names) == {bob.mxid}
        assert names[bob.mxid].display_name == bob.local
        assert names[bob.mxid].subscription == "both"
        # a named room becomes direct once m.direct files it under erin (as clients do)
        room = next(r for r in plugin._direct.rooms.values()  # type: ignore[union-attr]
                    if r.name == "Book club")
        await plugin._add_to_m_direct(erin.mxid, room.room_id)
        assert {b.username for b in await plugin.buddies()} == {bob.mxid, erin.mxid}


async def test_add_and_accept_buddy_with_events(hs: SynapseServer) -> None:
    alice, bob = await new_user(hs, "alice"), await new_user(hs, "bob")
    async with logged_in(hs, alice) as a, logged_in(hs, bob) as b:
        async with events(a) as a_events, events(b) as b_events:
            await a.add_buddy(bob.local)
            request = await b_events.next(lambda e: e.type == "contact_request")
            assert request.data["from"] == alice.mxid
            assert request.data["display_name"] == alice.local
            [pending] = await a.buddies()
            assert (pending.username, pending.subscription) == (bob.mxid, "pending")
            await a.add_buddy(bob.mxid)  # already asked: no second room
            await b.accept_buddy(alice.local)
            added = await a_events.next(lambda e: e.type == "contact_added")
            assert added.data["contact"]["username"] == bob.mxid
            added = await b_events.next(lambda e: e.type == "contact_added")
            assert added.data["contact"]["username"] == alice.mxid
        assert [(x.username, x.subscription) for x in await a.buddies()] == [(bob.mxid, "both")]
        assert [x.username for x in await b.buddies()] == [alice.mxid]
        direct = await b.api.request("GET", f"/user/{bob.mxid}/account_data/m.direct")
        assert list(direct) == [alice.mxid]  # both sides filed the room in m.direct
        async with events(a) as a_events:
            await b.remove_buddy(alice.mxid)
            removed = await a_events.next(lambda e: e.type == "contact_removed")
            assert removed.data["contact"]["username"] == bob.mxid
        assert await a.buddies() == []


# --- presence ------------------------------------------------------------------------------------


async def test_presence_both_ways_with_an_independent_client(hs: SynapseServer) -> None:
    alice, bob = await new_user(hs, "alice"), await new_user(hs, "bob")
    await nio_dm(hs, alice, bob)
    nio_bob = nio_client(hs, bob)
    try:
        async with logged_in(hs, alice) as plugin, events(plugin) as seen:
            # nio → plug-in
            await nio_bob.set_presence("unavailable", "brb")
            event = await seen.next(lambda e: e.type == "presence"
                                    and e.data["status_text"] == "brb")
            assert event.data["username"] == bob.mxid and event.data["state"] == "away"
            [buddy] = await plugin.buddies()
            assert (buddy.presence, buddy.status_text) == ("away", "brb")
            # plug-in → nio (busy is unavailable + status on Matrix)
            await plugin.set_presence("busy", "in a match")
            got = await nio_bob.get_presence(alice.mxid)
            assert isinstance(got, PresenceGetResponse), got
            assert (got.presence, got.status_msg) == ("unavailable", "in a match")
            await plugin.set_presence("online", "back")
            got = await nio_bob.get_presence(alice.mxid)
            assert (got.presence, got.status_msg) == ("online", "back")
    finally:
        await nio_bob.close()


async def test_chosen_presence_survives_other_processes_syncing(hs: SynapseServer) -> None:
    """'status away' in one process is kept by a 'watch' in another (account data)."""
    alice, bob = await new_user(hs, "alice"), await new_user(hs, "bob")
    await nio_dm(hs, alice, bob)
    async with logged_in(hs, alice) as status_cli:
        await status_cli.set_presence("away", "lunch")
    async with logged_in(hs, alice) as watcher, events(watcher):
        await asyncio.sleep(0.5)  # its long-poll /sync passes set_presence
        async with logged_in(hs, bob) as b:
            [buddy] = await b.buddies()
            assert (buddy.presence, buddy.status_text) == ("away", "lunch")


# --- messages ------------------------------------------------------------------------------------


async def test_history_order_idempotent_send_and_dm_creation(hs: SynapseServer) -> None:
    alice, bob = await new_user(hs, "alice"), await new_user(hs, "bob")
    async with logged_in(hs, alice) as a, logged_in(hs, bob) as b:
        first = await a.send(bob.local, "m0", "txn-0")  # no room yet: a DM is created
        again = await a.send(bob.mxid, "m0", "txn-0")   # a retry: same transaction id
        assert again.id == first.id
        await b.accept_buddy(alice.mxid)
        for n in range(1, 6):
            sender = b if n % 2 else a
            to = alice.mxid if n % 2 else bob.mxid
            await sender.send(to, f"m{n}", f"txn-{n}")
        history = await a.history(bob.mxid)
        assert [m.body for m in history] == [f"m{n}" for n in range(6)]
        assert [m.sender for m in history] == [alice.mxid if n % 2 == 0 else bob.mxid
                                               for n in range(6)]
        assert history[0].recipient == bob.mxid and history[1].recipient == alice.mxid
        assert history[0].client_msg_id == "txn-0"
        assert [m.body for m in await b.history(alice.local, limit=3)] == ["m3", "m4", "m5"]
        assert await a.history("@nobody:localhost") == []


async def test_cursor_inside_one_sync_answer_resumes_exactly(hs: SynapseServer) -> None:
    """A stop after the first of three events of one /sync answer repeats and loses nothing."""
    alice, bob = await new_user(hs, "alice"), await new_user(hs, "bob")
    await nio_dm(hs, alice, bob)
    async with logged_in(hs, alice) as a, logged_in(hs, bob) as b:
        start = await current_token(a)
        for n in range(3):
            await b.send(alice.mxid, f"burst {n}", f"b{n}")
        async with events(a, start) as seen:
            got = [await seen.next(lambda e: e.type == "message") for _ in range(3)]
        assert [e.data["body"] for e in got] == ["burst 0", "burst 1", "burst 2"]
        assert got[0].cursor.startswith("mx1.") and got[1].cursor.startswith("mx1.")
        assert Position.decode(got[0].cursor).since == start
        async with events(a, got[0].cursor) as seen:
            rest = [await seen.next(lambda e: e.type == "message") for _ in range(2)]
            assert [e.data["body"] for e in rest] == ["burst 1", "burst 2"]
            assert not [e for e in await seen.quiet(0.7) if e.type == "message"]
        async with events(a, got[2].cursor) as seen:
            await b.send(alice.mxid, "later", "b-later")
            assert (await seen.next(lambda e: e.type == "message")).data["body"] == "later"


async def test_limited_sync_gap_is_filled_in_order(hs: SynapseServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matrix_client, "TIMELINE_LIMIT", 3)
    alice, bob = await new_user(hs, "alice"), await new_user(hs, "bob")
    await nio_dm(hs, alice, bob)
    async with logged_in(hs, alice) as a, logged_in(hs, bob) as b:
        start = await current_token(a)
        for n in range(8):
            await b.send(alice.mxid, f"gap {n}", f"g{n}")
        async with events(a, start) as seen:
            got = [await seen.next(lambda e: e.type == "message") for _ in range(8)]
            assert [e.data["body"] for e in got] == [f"gap {n}" for n in range(8)]
            assert not [e for e in await seen.quiet(0.5) if e.type == "message"]


async def test_message_event_data_is_normalized(hs: SynapseServer) -> None:
    alice, bob = await new_user(hs, "alice"), await new_user(hs, "bob")
    room = await nio_dm(hs, alice, bob)
    async with logged_in(hs, alice) as a, logged_in(hs, bob) as b, events(a) as seen:
        sent = await b.send(alice.local, "hello", "n-1")
        event = await seen.next(is_message("hello"))
        assert event.data["from"] == bob.mxid and event.data["to"] == alice.mxid
        assert event.data["message_id"] == sent.id and event.data["room_id"] == room
        mine = await a.send(bob.mxid, "own echo", "n-2")
        echo = await seen.next(is_message("own echo"))
        assert (echo.data["from"], echo.data["to"]) == (alice.mxid, bob.mxid)
        assert echo.data["client_msg_id"] == "n-2" and echo.data["message_id"] == mine.id


# --- rate limits ---------------------------------------------------------------------------------


async def test_rate_limit_maps_to_rate_limited_and_hints_are_honoured(hs: SynapseServer) -> None:
    alice, bob = await new_user(hs, "alice"), await new_user(hs, "bob")
    await nio_dm(hs, alice, bob)
    await hs.admin("POST", f"/v1/users/{alice.mxid}/override_ratelimit",
                   {"messages_per_second": 1, "burst_count": 1})
    async with logged_in(hs, alice, max_rate_limit_wait="0") as impatient:
        with pytest.raises(RateLimited) as caught:
            for n in range(5):
                await impatient.send(bob.mxid, f"fast {n}", f"f{n}-{secrets.token_hex(3)}")
        assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 5
    async with logged_in(hs, alice) as patient:
        began = time.monotonic()
        for n in range(2):
            await patient.send(bob.mxid, f"slow {n}", f"s{n}-{secrets.token_hex(3)}")
        count, slept = patient.api.rate_limited
        assert count >= 1 and slept > 0
        assert time.monotonic() - began >= slept * 0.9


# --- the demo and the launcher -------------------------------------------------------------------


async def test_missing_synapse_is_a_clear_error_naming_make_peers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SYNAPSE_VENV_ENV, str(tmp_path / "no-synapse-here"))
    with pytest.raises(ConfigError, match="make peers"):
        await prepare_demo(tmp_path / "demo")


async def test_demo_starts_synapse_with_alice_and_bob_as_buddies(tmp_path: Path) -> None:
    demo = await prepare_demo(tmp_path)
    try:
        alice = demo["accounts"]["alice"]
        assert alice["user_id"] == "@alice:localhost"
        plugin = MatrixPlugin(TargetConfig(name="demo", plugin="matrix",
                                           server=demo["homeserver"]))
        try:
            await plugin.login({"username": "alice", "password": Secret(alice["password"])})
            [bob] = await plugin.buddies()
            assert (bob.username, bob.display_name, bob.subscription) == (
                "@bob:localhost", "Bob", "both")
            assert await plugin._room_with(bob.username) == demo["room_id"]
        finally:
            await plugin.close()
    finally:
        demo["stop"]()
