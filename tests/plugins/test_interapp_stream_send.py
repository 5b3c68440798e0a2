"""The ``interapp`` plug-in sends on its open event stream (no HTTP request per message), falls
back to ``POST /v1/messages`` when no stream is open, and never waits on its own generator when
the consumer sends while handling an event. Against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interapp.plugins.contract import Plugin, PluginEvent, TargetConfig
from interapp.plugins.interapp_server.client import InterappPlugin
from interapp.secret import Secret
from interapp.server import accounts, passwords, social
from interapp.server.storage import Database
from interapp.testing.servers import ThreadedServer

PASSWORD = "stream-send-pw-1"  # a throw-away test account


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadedServer, str,
                                                                        Secret | None]]:
    """One real server for the module, with the host's OAuth client."""
    srv = ThreadedServer("chat", tmp_path_factory.mktemp("stream-send") / "c.db").start()
    try:
        cid, secret = srv.create_client()
        yield srv, cid, secret
    finally:
        srv.stop()


@pytest.fixture
def chat(server: tuple[ThreadedServer, str, Secret | None]
         ) -> tuple[ThreadedServer, str, Secret | None, list[str]]:
    """Two fresh buddies for each test (so no test sees another's messages)."""
    srv, cid, secret = server
    names = [f"u{secrets.token_hex(4)}" for _ in range(2)]

    async def buddies() -> None:
        db = Database.open(srv.db_url)
        try:
            async with db.begin() as conn:
                hashed = passwords.hash_sync(Secret(PASSWORD))
                a = await accounts.create_user(conn, names[0], password_hash=hashed)
                b = await accounts.create_user(conn, names[1], password_hash=hashed)
                await social.make_buddies(conn, a, b)
        finally:
            await db.close()

    srv.call(buddies)
    return srv, cid, secret, names


async def _plugin(chat: tuple[ThreadedServer, str, Secret | None, list[str]],
                  who: int) -> tuple[InterappPlugin, list[str]]:
    server, cid, secret, names = chat
    plugin = InterappPlugin(TargetConfig(name="t", plugin="interapp", server=server.url,
                                         client_id=cid, client_secret=secret))
    login = await plugin.login({"username": names[who], "password": Secret(PASSWORD)})
    await plugin.open(login.credential)
    posts: list[str] = []

    async def record(request: httpx.Request) -> None:
        if request.method == "POST":
            posts.append(request.url.path)

    plugin.client.http.event_hooks["request"].append(record)
    return plugin, posts


async def _attached(plugin: InterappPlugin) -> None:
    """Wait until the plug-in's event stream is open to send on."""
    for _ in range(200):
        if plugin._stream_sends.attached:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the event stream never opened")


async def _messages(plugin: Plugin, cursor: str | None = None) -> AsyncIterator[PluginEvent]:
    async for event in plugin.events(cursor):
        if event.type == "message":
            yield event


@pytest.mark.anyio
async def test_send_uses_the_open_stream_and_http_otherwise(chat: Any) -> None:
    alice, alice_posts = await _plugin(chat, 0)
    bob, _ = await _plugin(chat, 1)
    bob_name = chat[3][1]
    try:
        first = await alice.send(bob_name, "by http", "h1")  # no stream open yet
        assert alice_posts == ["/v1/messages"]

        all_sent = asyncio.Event()

        async def watch() -> list[str]:
            got = []
            async for event in alice.events(None):
                if event.type == "message":
                    got.append(event.data["body"])
                    if len(got) == 20:
                        # an event may overtake its send's answer: keep the stream open until
                        # every send has its answer (closing it would send the rest by HTTP)
                        await all_sent.wait()
                        return got
            return got

        watcher = asyncio.create_task(watch())
        await _attached(alice)
        sent = [await alice.send(bob_name, f"by stream {i}", f"s{i}") for i in range(20)]
        all_sent.set()
        assert alice_posts == ["/v1/messages"], (
            f"a message went over HTTP while streaming: {alice._stream_sends.last_fallback}")
        assert [m.body for m in sent] == [f"by stream {i}" for i in range(20)]
        assert await asyncio.wait_for(watcher, 10) == [f"by stream {i}" for i in range(20)]
        # The same client_msg_id once more, over HTTP now: the same stored message.
        again = await alice.send(bob_name, "by stream 3", "s3")
        assert again.id == sent[3].id
        history = await bob.history(chat[3][0], limit=50)
        assert [m.body for m in history] == [first.body] + [f"by stream {i}" for i in range(20)]
    finally:
        await alice.close()
        await bob.close()


@pytest.mark.anyio
async def test_replying_from_inside_the_event_loop_does_not_stall(chat: Any) -> None:
    """An echo bot sends while handling each event: the answer must not wait for the bot."""
    alice, _ = await _plugin(chat, 0)
    bob, bob_posts = await _plugin(chat, 1)
    alice_name = chat[3][0]
    try:
        replies = 0

        async def bot() -> None:
            nonlocal replies
            async for event in _messages(bob):
                if event.data["from"] == alice_name:
                    body = event.data["body"]
                    await bob.send(alice_name, f"re: {body}", f"re-{event.data['client_msg_id']}")
                    replies += 1
                    if replies == 10:
                        return

        task = asyncio.create_task(bot())
        await _attached(bob)
        started = time.monotonic()
        tag = secrets.token_hex(3)
        for i in range(10):
            await alice.send(chat[3][1], f"ping {tag} {i}", f"p-{tag}-{i}")
        await asyncio.wait_for(task, 15)
        elapsed = time.monotonic() - started
        assert replies == 10
        assert bob_posts == [], "the bot fell back to HTTP: its stream sends stalled"
        assert elapsed < 5, f"ten echoes took {elapsed:.1f} s"
    finally:
        await alice.close()
        await bob.close()



@pytest.mark.anyio
async def test_a_cursor_the_server_no_longer_knows_resets_to_its_newest(chat: Any) -> None:
    """A cursor kept across a reset of the target's data: the plug-in says so with a
    ``cursor_reset`` event carrying the server's newest seq, then streams live events again
    (instead of reconnecting forever with a cursor the server refuses)."""
    alice, _ = await _plugin(chat, 0)
    bob, _ = await _plugin(chat, 1)
    try:
        events = alice.events("999999")
        reset = await asyncio.wait_for(anext(events), 10)
        assert reset.type == "cursor_reset" and reset.data["since"] == "999999"
        newest = int(reset.cursor)
        assert reset.data["last_seq"] == newest and newest < 999999
        await bob.send(chat[3][0], "after the reset", "r1")
        live = await asyncio.wait_for(anext(events), 10)
        assert (live.type, live.data["body"]) == ("message", "after the reset")
        assert int(live.cursor) == newest + 1
        assert alice._stream_sends.attached
        await events.aclose()
        assert not alice._stream_sends.attached  # aclose() closed the connection at once
    finally:
        await alice.close()
        await bob.close()


def test_a_malformed_seq_ends_the_stream_like_a_drop() -> None:
    """A third-party server's bad ``seq`` makes the host reconnect (ConnectionLost), instead of
    a ValueError that would end the target's stream for good."""
    from interapp.errors import ConnectionLost
    from interapp.plugins.interapp_server.client import _seq

    assert _seq(7) == 7 and _seq("7") == 7
    # "²" is a digit to str.isdigit() but int() refuses it (it raised ValueError)
    for bad in ("x", "-1", -1, None, True, 1.5, "²", "1²", "١٢"):
        with pytest.raises(ConnectionLost):
            _seq(bad)


@settings(max_examples=300, database=None)
@given(st.text(max_size=20) | st.sampled_from(["²", "³", "¹²", "٣", "\U0001d7d7", "0", "18"]))
def test_any_seq_text_is_a_number_or_a_reconnect(value: str) -> None:
    """Generated: whatever text a server puts in ``seq``, the plug-in reads a number or ends
    the stream with ConnectionLost; nothing else escapes."""
    from interapp.errors import ConnectionLost
    from interapp.plugins.interapp_server.client import _seq

    try:
        seq = _seq(value)
    except ConnectionLost:
        return
    assert str(seq) == value.lstrip("0") or (seq == 0 and set(value) == {"0"})
