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

from interapp.plugins.contract import Plugin, PluginEvent, TargetConfig
from interapp.plugins.interapp_server.client import InterappPlugin
from interapp.secret import Secret
from interapp.server import accounts, passwords, social
from interapp.server.storage import Database
from interapp.testing.servers import ThreadedServer

PASSWORD = "stream-send-pw-1"  # a throw-away test account


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadedServer, str,
                                                                      Secret | None, list[str]]]:
    server = ThreadedServer("chat", tmp_path_factory.mktemp("stream-send") / "c.db").start()
    names = [f"u{secrets.token_hex(4)}" for _ in range(2)]

    async def setup() -> tuple[str, Secret | None]:
        db = Database.open(server.db_url)
        try:
            async with db.begin() as conn:
                hashed = passwords.hash_sync(Secret(PASSWORD))
                a = await accounts.create_user(conn, names[0], password_hash=hashed)
                b = await accounts.create_user(conn, names[1], password_hash=hashed)
                await social.make_buddies(conn, a, b)
                return await accounts.create_client(conn, "host", public=False)
        finally:
            await db.close()

    try:
        cid, secret = server.call(setup)
        yield server, cid, secret, names
    finally:
        server.stop()


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
        ready = asyncio.Event()

        async def watch() -> list[str]:
            got = []
            async for event in alice.events(None):
                ready.set()
                if event.type == "message":
                    got.append(event.data["body"])
                    if len(got) == 20:
                        return got
            return got

        watcher = asyncio.create_task(watch())
        for _ in range(100):  # the stream is open once the plug-in can send on it
            if alice._stream_sends.attached:
                break
            await asyncio.sleep(0.05)
        sent = [await alice.send(bob_name, f"by stream {i}", f"s{i}") for i in range(20)]
        assert alice_posts == ["/v1/messages"], "a message went over HTTP while streaming"
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
        started = time.monotonic()

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
        for _ in range(100):
            if bob._stream_sends.attached:
                break
            await asyncio.sleep(0.05)
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

