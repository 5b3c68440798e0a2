"""XMPP-specific behaviour of the ``xmpp`` plug-in, against a real Prosody on 127.0.0.1.

Where a test needs "another XMPP client" (to see what went over the wire, or to do something the
plug-in contract has no verb for: renaming a roster entry, publishing a vCard) it uses plain
slixmpp (``xmpp_kit.raw_client``), independent of the plug-in's code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from xmpp_kit import raw_client

from interapp.errors import (
    ApiNotFound,
    ConfigError,
    ConnectionLost,
    Forbidden,
    NeedsReauth,
    RateLimited,
)
from interapp.host import Host
from interapp.host.prompts import Scripted
from interapp.plugins.contract import PluginEvent, TargetConfig
from interapp.plugins.xmpp.client import (
    PASSWORD_KIND,
    SCRAM_KIND,
    XmppPlugin,
    bare_jid,
    parse_server,
    retry_after_of,
    stanza_error,
)
from interapp.plugins.xmpp.demo import make_buddies, prepare_demo
from interapp.secret import Secret
from interapp.testing import HomeApp
from interapp.testing.prosody import ProsodyServer
from interapp.vault import Vault

PLAIN_DOMAIN = "plain.localhost"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    """A Prosody with ``localhost`` (SCRAM) and ``plain.localhost`` (PLAIN only)."""
    with ProsodyServer(tmp_path_factory.mktemp("prosody-xmpp"),
                       plain_domain=PLAIN_DOMAIN) as server:
        yield server


def account(server: ProsodyServer, domain: str | None = None) -> tuple[str, str]:
    password = secrets.token_urlsafe(12)
    return server.register(f"u{secrets.token_hex(5)}", password, domain), password


def config(server: ProsodyServer, **kw: Any) -> TargetConfig:
    return TargetConfig(name="xmpp-test", plugin="xmpp", server=kw.pop("url", server.url), **kw)


@contextlib.asynccontextmanager
async def plugin(server: ProsodyServer, who: tuple[str, str],
                 **kw: Any) -> AsyncIterator[XmppPlugin]:
    p = XmppPlugin(config(server, **kw))
    try:
        await p.login({"username": who[0], "password": Secret(who[1])})
        yield p
    finally:
        await p.close()


@contextlib.asynccontextmanager
async def collect(p: XmppPlugin, cursor: str | None = None
                  ) -> AsyncIterator[asyncio.Queue[PluginEvent]]:
    queue: asyncio.Queue[PluginEvent] = asyncio.Queue()

    async def pump() -> None:
        async for event in p.events(cursor):
            await queue.put(event)

    task = asyncio.create_task(pump())
    try:
        await asyncio.sleep(0.2)
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


async def eventually(check: Callable[[], Any], limit: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


# --- roster ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_roster_names_groups_and_subscription_states(prosody: ProsodyServer) -> None:
    alice, bob = account(prosody), account(prosody)
    async with plugin(prosody, alice) as pa, plugin(prosody, bob) as pb, \
            collect(pa) as alice_events, collect(pb) as bob_events:
        await pa.add_buddy(bob[0])
        [entry] = [b for b in await pa.buddies() if b.username == bob[0]]
        assert entry.subscription == "none+pending_out"
        assert entry.display_name == bob[0].split("@")[0] and entry.groups == ()

        # the other side sees the subscription request, as an event and in its list
        request = await next_event(bob_events, lambda e: e.type == "contact_request")
        assert request.data["username"] == alice[0]
        assert {b.username: b.subscription for b in await pb.buddies()}[alice[0]] \
            == "none+pending_in"

        await pb.accept_buddy(alice[0])
        await next_event(alice_events, lambda e: e.type == "contact_added"
                         and e.data["username"] == bob[0])

        async def mutual() -> bool:
            a = {b.username: b.subscription for b in await pa.buddies()}
            b = {b.username: b.subscription for b in await pb.buddies()}
            return a.get(bob[0]) == "both" and b.get(alice[0]) == "both"

        await eventually(mutual)

        # alice renames bob and files him under a group from another client: roster push
        async with raw_client(prosody, alice, presence=False) as other:
            await other.update_roster(bob[0], name="Bobby", groups=["Friends", "Chess"])

        async def renamed() -> bool:
            [b] = [b for b in await pa.buddies() if b.username == bob[0]]
            return b.display_name == "Bobby" and b.groups == ("Chess", "Friends")

        await eventually(renamed)
        [b_entry] = [b for b in await pa.buddies() if b.username == bob[0]]
        assert b_entry.presence == "online" and b_entry.subscription == "both"

        await pa.remove_buddy(bob[0])
        assert bob[0] not in [b.username for b in await pa.buddies()]
        await next_event(bob_events, lambda e: e.type == "contact_removed"
                         and e.data["username"] == alice[0])

        async def gone() -> bool:
            b = {b.username: b.subscription for b in await pb.buddies()}
            return b.get(alice[0], "none") == "none"

        await eventually(gone)


@pytest.mark.anyio
async def test_declining_a_request(prosody: ProsodyServer) -> None:
    alice, carol = account(prosody), account(prosody)
    async with plugin(prosody, alice) as pa, plugin(prosody, carol) as pc, \
            collect(pa) as alice_events, collect(pc) as carol_events:
        await pc.add_buddy(alice[0])
        await next_event(alice_events, lambda e: e.type == "contact_request"
                         and e.data["username"] == carol[0])
        await pa.remove_buddy(carol[0])  # decline
        await next_event(carol_events, lambda e: e.type == "contact_removed"
                         and e.data["username"] == alice[0])
        assert carol[0] not in [b.username for b in await pa.buddies()]
        [entry] = [b for b in await pc.buddies() if b.username == alice[0]]
        assert entry.subscription == "none"
        with pytest.raises(ApiNotFound):
            await pa.remove_buddy(carol[0])


# --- profile -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_vcard_profile_both_ways(prosody: ProsodyServer) -> None:
    alice = account(prosody)
    async with raw_client(prosody, alice, presence=False) as other:
        vcard = other.plugin["xep_0054"].make_vcard()
        vcard["FN"] = "Alice Liddell"
        await other.plugin["xep_0054"].publish_vcard(vcard)
    p = XmppPlugin(config(prosody))
    try:
        login = await p.login({"username": alice[0], "password": Secret(alice[1])})
        assert login.remote_account_id == alice[0]
        profile = await p.open(login.credential)
        assert profile.display_name == "Alice Liddell"
        assert profile.id == profile.username == alice[0]
        await p.set_display_name("Alice L.")
    finally:
        await p.close()
    async with raw_client(prosody, alice, presence=False) as other:
        iq = await other.plugin["xep_0054"].get_vcard(alice[0])
        assert iq["vcard_temp"]["FN"] == "Alice L."


# --- presence ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_presence_show_and_status_both_ways(prosody: ProsodyServer) -> None:
    alice, bob = account(prosody), account(prosody)
    await make_buddies(prosody.url, alice, bob)
    async with raw_client(prosody, bob) as raw_bob, plugin(prosody, alice) as pa, \
            collect(pa) as alice_events:
        seen: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        raw_bob.add_event_handler("presence", lambda p: seen.put_nowait(
            (str(p["from"].bare), str(p["type"]), str(p["status"]))))

        async def wire(show: str, status: str) -> None:
            async def find() -> None:
                while (await seen.get()) != (alice[0], show, status):
                    pass
            await asyncio.wait_for(find(), 10)

        # outgoing: the plug-in's states become XMPP show values
        for state, show in (("busy", "dnd"), ("away", "away"), ("online", "chat")):
            await pa.set_presence(state, f"{state} now")  # type: ignore[arg-type]
            await wire(show, f"{state} now")
        await pa.set_presence("offline", "bye")
        await wire("unavailable", "bye")
        await pa.set_presence("online", "")

        # incoming: XMPP show values become the plug-in's states
        for show, state in (("xa", "away"), ("dnd", "busy"), ("", "online"), ("away", "away")):
            raw_bob.send_presence(pshow=show or None, pstatus=f"bob {show or 'here'}")
            event = await next_event(alice_events, lambda e: e.type == "presence"
                                     and e.data["status_text"] == f"bob {show or 'here'}")
            assert event.data["username"] == bob[0] and event.data["state"] == state
        [entry] = [b for b in await pa.buddies() if b.username == bob[0]]
        assert (entry.presence, entry.status_text) == ("away", "bob away")
        raw_bob.send_presence(ptype="unavailable", pstatus="gone home")
        event = await next_event(alice_events, lambda e: e.type == "presence"
                                 and e.data["state"] == "offline")
        assert (event.data["username"], event.data["status_text"]) == (bob[0], "gone home")


# --- messages, offline delivery and the archive --------------------------------------------------


@pytest.mark.anyio
async def test_offline_messages_arrive_after_reconnect_from_the_archive(
        prosody: ProsodyServer) -> None:
    alice, bob = account(prosody), account(prosody)
    async with plugin(prosody, bob) as pb:
        async with plugin(prosody, alice) as pa, collect(pa) as events:
            await pb.send(alice[0], "m0", "id-m0")
            first = await next_event(events, lambda e: e.type == "message")
            assert first.data["body"] == "m0" and first.data["from"] == bob[0]
            assert first.data["to"] == alice[0] and first.data["client_msg_id"] == "id-m0"
            assert first.cursor == first.data["message_id"]
            cursor = first.cursor
        # alice is offline now: these wait in the server (offline storage + archive)
        for n in (1, 2, 3):
            await pb.send(alice[0], f"m{n}", f"id-m{n}")

    async with plugin(prosody, alice) as pa2:
        # resuming after the cursor gives exactly the three, in order, once
        async with collect(pa2, cursor) as events:
            got = [await next_event(events, lambda e: e.type == "message") for _ in range(3)]
            assert [e.data["body"] for e in got] == ["m1", "m2", "m3"]
            assert [e.data["client_msg_id"] for e in got] == ["id-m1", "id-m2", "id-m3"]
            await asyncio.sleep(0.5)
            assert not [e for e in _drain(events) if e.type == "message"], "duplicates"
        # "from now on" does not replay them
        async with collect(pa2, None) as events:
            await asyncio.sleep(0.3)
            assert not [e for e in _drain(events) if e.type == "message"]
        # a cursor the archive no longer knows (expired): everything left is newer
        async with collect(pa2, "no-such-archive-id") as events:
            got = [await next_event(events, lambda e: e.type == "message") for _ in range(4)]
            assert [e.data["body"] for e in got] == ["m0", "m1", "m2", "m3"]


def _drain(queue: asyncio.Queue[PluginEvent]) -> list[PluginEvent]:
    return [queue.get_nowait() for _ in range(queue.qsize())]


@pytest.mark.anyio
async def test_history_from_the_archive(prosody: ProsodyServer) -> None:
    alice, bob = account(prosody), account(prosody)
    async with plugin(prosody, alice) as pa, plugin(prosody, bob) as pb:
        sent = await pa.send(bob[0], "a1", "c-a1")
        assert (sent.sender, sent.recipient, sent.client_msg_id) == (alice[0], bob[0], "c-a1")
        await pb.send(alice[0], "b1", "c-b1")
        await pa.send(bob[0], "a2", "c-a2")
        history = await pa.history(bob[0])
        assert [(m.sender, m.recipient, m.body, m.client_msg_id) for m in history] == [
            (alice[0], bob[0], "a1", "c-a1"), (bob[0], alice[0], "b1", "c-b1"),
            (alice[0], bob[0], "a2", "c-a2")]
        assert [m.body for m in await pb.history(alice[0], limit=2)] == ["b1", "a2"]
        assert all(m.id and m.sent_at for m in history)
        # more than one archive page (Prosody answers at most 50 per query)
        for n in range(60):
            await pb.send(alice[0], f"n{n}", f"c-n{n}")
        longer = await pa.history(bob[0], limit=55)
        assert [m.body for m in longer] == [f"n{n}" for n in range(5, 60)]


@pytest.mark.anyio
async def test_message_to_unknown_account_is_refused(prosody: ProsodyServer) -> None:
    alice = account(prosody)
    async with plugin(prosody, alice) as pa:
        with pytest.raises(ApiNotFound):
            await pa.send(f"nobody{secrets.token_hex(3)}@localhost", "hello?", uuid.uuid4().hex)


# --- credential ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_vault_keeps_scram_keys_not_the_password(
        prosody: ProsodyServer, interapp_home: HomeApp, tmp_path: Path) -> None:
    alice = account(prosody)
    env = {"INTERAPP_VAULT_KEY": base64.b64encode(os.urandom(32)).decode(),
           "INTERAPP_VAULT_KEYRING": "0"}
    local_user, local_password = interapp_home.new_user()
    async with Host.open(tmp_path, env=env, call_timeout=30) as host:
        await host.set_local(interapp_home.url, client_id=interapp_home.client_id,
                             client_secret=interapp_home.client_secret)
        await host.sign_in(local_user, local_password)
        await host.add_target("x", plugin="xmpp", server=prosody.url)
        await host.connect("x", Scripted({"username": alice[0], "password": alice[1]}))
    with Vault.open(tmp_path / "vault.db", env=env) as vault:
        [link] = vault.list_links()
        assert link.remote_account_id == alice[0] and link.credential_kind == SCRAM_KIND
        credential = vault.read_credential(link.id)
    stored = credential.to_json().decode()
    assert alice[1] not in stored and "password" not in credential.fields
    assert set(credential.fields) == {"jid", "mechanism", "scram_salt", "scram_iterations",
                                      "scram_client_key", "scram_server_key"}
    for path in tmp_path.rglob("*"):  # nothing on disk holds it either
        if path.is_file():
            assert alice[1].encode() not in path.read_bytes(), path
    # and the keys alone log in
    p = XmppPlugin(config(prosody))
    try:
        assert (await p.open(credential)).id == alice[0]
    finally:
        await p.close()


@pytest.mark.anyio
async def test_server_without_scram_keeps_the_password_for_plain(prosody: ProsodyServer) -> None:
    carol = account(prosody, PLAIN_DOMAIN)
    p = XmppPlugin(config(prosody))
    try:
        login = await p.login({"username": carol[0], "password": Secret(carol[1])})
        assert login.credential.kind == PASSWORD_KIND
        assert login.credential.get("password") == carol[1]
        assert (await p.open(login.credential)).id == carol[0]
    finally:
        await p.close()


@pytest.mark.anyio
async def test_login_failures_map_to_host_errors(prosody: ProsodyServer) -> None:
    alice = account(prosody)
    p = XmppPlugin(config(prosody))
    try:
        with pytest.raises(NeedsReauth, match="not-authorized"):
            await p.login({"username": alice[0], "password": Secret("wrong")})
        login = await p.login({"username": alice[0], "password": Secret(alice[1])})
        prosody.set_password(alice[0], "changed-" + alice[1])
        with pytest.raises(NeedsReauth, match=r"password .* was changed"):
            await p.open(login.credential)
        with pytest.raises(NeedsReauth, match="user@domain"):  # re-prompts, like a typo
            await p.login({"username": "no-domain-here", "password": Secret("x")})
    finally:
        await p.close()
    closed = XmppPlugin(config(prosody, url=f"xmpp://127.0.0.1:{_free_port()}"))
    with pytest.raises(ConnectionLost):
        await closed.login({"username": alice[0], "password": Secret(alice[1])})
    await closed.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_error_and_address_mapping() -> None:
    limited = stanza_error("wait", "resource-constraint", "retry in 30 s", "message")
    assert isinstance(limited, RateLimited) and limited.retry_after == 30.0
    assert isinstance(stanza_error("wait", "policy-violation", "", "x"), RateLimited)
    assert stanza_error("wait", "policy-violation", "", "x").retry_after == 5.0
    assert isinstance(stanza_error("auth", "forbidden", "", "x"), Forbidden)
    assert isinstance(stanza_error("cancel", "service-unavailable", "", "x"), ApiNotFound)
    assert retry_after_of("slow down for 2.5 seconds") == 2.5
    assert parse_server("xmpp://chat.example.org") == ("chat.example.org", 5222)
    assert parse_server("xmpp://127.0.0.1:15222") == ("127.0.0.1", 15222)
    for bad in ("http://example.org", "xmpp://", "xmpp://host:99999"):
        with pytest.raises(ConfigError):
            parse_server(bad)
    assert bare_jid(" Bob@Example.org/phone ") == "bob@example.org"
    assert bare_jid("bob", default_domain="localhost") == "bob@localhost"
    # TLS unless the server is on loopback (or the target says otherwise)
    assert XmppPlugin(TargetConfig("a", "xmpp", "xmpp://example.org")).tls is True
    assert XmppPlugin(TargetConfig("a", "xmpp", "xmpp://127.0.0.1:5222")).tls is False
    assert XmppPlugin(TargetConfig("a", "xmpp", "xmpp://localhost", tls=True)).tls is True


# --- TLS -----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_tls(prosody: ProsodyServer, tmp_path: Path) -> None:
    alice = account(prosody)
    # a server without TLS is refused when TLS is asked for
    with pytest.raises(ConfigError, match="TLS"):
        async with plugin(prosody, alice, tls=True):
            pass
    with ProsodyServer(tmp_path / "tls", tls=True) as secure:
        dave = account(secure)
        # untrusted (self-signed) certificate: refused
        with pytest.raises(ConnectionLost):
            async with plugin(secure, dave, tls=True):
                pass
        # a server that requires TLS, asked without: says so (no 15 s wait)
        with pytest.raises(ConfigError, match="requires TLS"):
            async with plugin(secure, dave, tls=False):
                pass
        async with plugin(secure, dave, tls=True,
                          options={"ca_file": str(secure.cert_path)}) as p:
            assert "starttls" in p._client.features  # the stream is encrypted
            assert await p.buddies() == []
        p = XmppPlugin(config(secure, tls=True, options={"ca_file": str(secure.cert_path)}))
        try:  # the SCRAM keys learnt over TLS log in again over TLS
            login = await p.login({"username": dave[0], "password": Secret(dave[1])})
            assert login.credential.kind == SCRAM_KIND
            assert (await p.open(login.credential)).id == dave[0]
        finally:
            await p.close()


# --- the demo ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_prepare_demo(tmp_path: Path) -> None:
    demo = await prepare_demo(tmp_path)
    try:
        assert demo["server"].startswith("xmpp://127.0.0.1:")
        alice, bob = demo["accounts"]["alice"], demo["accounts"]["bob"]
        p = XmppPlugin(TargetConfig("demo", "xmpp", demo["server"]))
        try:
            await p.login({"username": alice["username"],
                           "password": Secret(alice["password"])})
            [buddy] = await p.buddies()
            assert (buddy.username, buddy.subscription) == (bob["username"], "both")
        finally:
            await p.close()
    finally:
        demo["stop"]()


@pytest.mark.anyio
async def test_missing_prosody_is_an_error_that_says_how_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import interapp.testing.prosody as launcher

    monkeypatch.setattr(launcher.shutil, "which", lambda name: None)
    monkeypatch.setattr(launcher.os, "access", lambda path, mode: False)
    with pytest.raises(launcher.ProsodyNotInstalled, match="apt-get install"):
        ProsodyServer(tmp_path / "none")
    with pytest.raises(ConfigError, match=r"apt-get install .*prosody"):
        await prepare_demo(tmp_path)
