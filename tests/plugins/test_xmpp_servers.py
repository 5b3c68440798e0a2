"""The ``xmpp`` plug-in through the real ``interapp`` command, on Prosody and on ejabberd.

Each test runs against both servers (one Prosody for the module, the session's ejabberd): the
user's buddies and "other clients" are plain slixmpp clients (:func:`xmpp_kit.raw_client`); the
user's interapp is ``interapp …`` subprocesses on a host linked through ``interapp connect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from xmpp_kit import Cli, XmppServer, linked_cli, new_account, raw_client, round_trip

from interapp.plugins.contract import TargetConfig
from interapp.plugins.xmpp.client import XmppPlugin
from interapp.plugins.xmpp.demo import make_buddies
from interapp.plugins.xmpp.presence import LIMIT
from interapp.secret import Secret
from interapp.testing import HomeApp
from interapp.testing.ejabberd import EjabberdServer
from interapp.testing.prosody import ProsodyServer

pytest_plugins = ["interapp.testing.ejabberd"]
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    with ProsodyServer(tmp_path_factory.mktemp("prosody-cli")) as server:
        yield server


@dataclass
class World:
    """One XMPP server, alice linked to it through the CLI."""

    server: XmppServer
    alice: tuple[str, str]
    cli: Cli


@pytest.fixture(scope="module", params=["prosody", "ejabberd"])
def world(request: pytest.FixtureRequest, interapp_home: HomeApp,
          tmp_path_factory: pytest.TempPathFactory) -> World:
    server: XmppServer = request.getfixturevalue(request.param)
    alice = new_account(server)
    cli = linked_cli(interapp_home, server, alice, tmp_path_factory.mktemp(f"cli-{request.param}"))
    return World(server, alice, cli)


async def buddy(world: World) -> tuple[str, str]:
    """A new account that is alice's mutual buddy."""
    who = await asyncio.to_thread(new_account, world.server)
    await make_buddies(world.server.url, world.alice, who)
    return who


def rows(world: World) -> dict[str, dict[str, Any]]:
    return {r["username"]: r for r in world.cli.json("contacts", "x")["contacts"]}


class Lines:
    """A background command's standard output, line by line, readable with a time limit."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)

    async def until(self, match: Callable[[dict[str, Any]], bool], limit: float = 20.0
                    ) -> list[dict[str, Any]]:
        """Every event printed until (and with) the first that matches."""
        import json

        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            assert left > 0 and self.proc.poll() is None, (seen, self.proc.poll())
            try:
                line = await asyncio.to_thread(self._queue.get, True, min(left, 0.5))
            except queue.Empty:
                continue
            seen.append(json.loads(line))
            if match(seen[-1]):
                return seen


@contextlib.asynccontextmanager
async def watching(world: World) -> AsyncIterator[Lines]:
    """``interapp watch x --json`` in the background; stopped by its PID at the end."""
    proc = world.cli.popen("watch", "x", "--json")
    try:
        yield Lines(proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def interapp_online(watcher: Any, alice: str) -> None:
    """Wait until ``watcher`` (alice's buddy) sees an interapp session of alice come online."""
    seen = asyncio.get_running_loop().create_future()

    def on_presence(pres: Any) -> None:
        if str(pres["from"].bare) == alice and str(pres["from"].resource).startswith(
                "interapp-") and pres["type"] != "unavailable" and not seen.done():
            seen.set_result(None)

    watcher.add_event_handler("presence", on_presence)
    try:
        await asyncio.wait_for(seen, 20)
    finally:
        watcher.del_event_handler("presence", on_presence)


# --- one-shot commands see presence ------------------------------------------------------------


async def test_one_shot_contacts_shows_buddies_presence(world: World) -> None:
    bob, carol = await buddy(world), await buddy(world)
    async with raw_client(world.server, bob, resource="laptop", pshow="chat",
                          pstatus="ready for a match") as b:
        await round_trip(b)
        for _ in range(2):  # again: every fresh session must see it
            t0 = time.monotonic()
            found = await asyncio.to_thread(rows, world)
            took = time.monotonic() - t0
            assert (found[bob[0]]["presence"], found[bob[0]]["status_text"]) == \
                ("online", "ready for a match"), found
            assert (found[carol[0]]["presence"], found[carol[0]]["status_text"]) == \
                ("offline", ""), found
            assert took < 20, took
    # and once bob has gone, a fresh read says so
    found = await asyncio.to_thread(rows, world)
    assert found[bob[0]]["presence"] == "offline", found


# --- other clients' offline messages -------------------------------------------------------------


async def phone_inbox(world: World, expected: set[str], limit: float = 10.0) -> list[str]:
    """What alice's phone (an ordinary client: priority 0, no MAM) receives when it comes
    online — the server's offline store — until ``expected`` all came (or ``limit``)."""
    got: list[str] = []
    complete = asyncio.Event()

    def on_message(msg: Any) -> None:
        got.append(str(msg["body"]))
        if expected <= set(got):
            complete.set()

    async with raw_client(world.server, world.alice, presence=False, resource="phone") as phone:
        phone.add_event_handler("message", on_message)
        phone.send_presence()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(complete.wait(), limit)
    return got


async def test_one_shot_commands_leave_offline_messages_to_other_clients(world: World) -> None:
    bob = await buddy(world)
    tag = uuid.uuid4().hex[:8]
    async with raw_client(world.server, bob) as b:
        b.send_message(mto=world.alice[0], mbody=f"{tag} while you were away", mtype="chat")
        await round_trip(b)
        history = await asyncio.to_thread(world.cli.json, "history", "x", bob[0])
        assert f"{tag} while you were away" in [m["body"] for m in history["messages"]]
        # a message arriving *during* a one-shot command is not taken by it either
        online = asyncio.create_task(interapp_online(b, world.alice[0]))
        await asyncio.sleep(0)
        reading = asyncio.create_task(asyncio.to_thread(rows, world))
        await online
        b.send_message(mto=world.alice[0], mbody=f"{tag} during contacts", mtype="chat")
        await round_trip(b)
        await reading
    if isinstance(world.server, EjabberdServer):
        assert world.server.offline_count(world.alice[0]) >= 1
    expected = {f"{tag} while you were away", f"{tag} during contacts"}
    got = await phone_inbox(world, expected)
    assert expected <= set(got), got


async def test_watch_gets_messages_live_and_leaves_offline_ones(world: World) -> None:
    bob = await buddy(world)
    tag = uuid.uuid4().hex[:8]
    async with raw_client(world.server, bob) as b:
        b.send_message(mto=world.alice[0], mbody=f"{tag} before watch", mtype="chat")
        await round_trip(b)
        async with watching(world) as out:
            await interapp_online(b, world.alice[0])
            b.send_message(mto=world.alice[0], mbody=f"{tag} live", mtype="chat")
            events = await out.until(lambda e: e["type"] == "message"
                                     and e["body"] == f"{tag} live")
            assert f"{tag} before watch" not in [e.get("body") for e in events]
    got = await phone_inbox(world, {f"{tag} before watch"})
    assert f"{tag} before watch" in got, got


# --- a repeated presence is not a new event --------------------------------------------------


async def test_watch_after_a_server_restart_repeats_no_presence_and_misses_no_departure(
        world: World) -> None:
    bob, carol = await buddy(world), await buddy(world)
    status = f"ready for a match {uuid.uuid4().hex[:4]}"

    def of(who: tuple[str, str]) -> Callable[[dict[str, Any]], bool]:
        return lambda e: e["type"] == "presence" and e["username"] == who[0]

    async with watching(world) as out:
        async with raw_client(world.server, bob, pstatus="around"), \
                raw_client(world.server, carol, pshow="chat", pstatus=status):
            first = await out.until(lambda e: of(carol)(e) and e["status_text"] == status)
            if not any(of(bob)(e) for e in first):
                first += await out.until(of(bob))
            # the watch is frozen while the server restarts: carol comes back unchanged (its
            # new session is told her presence again, identical), bob does not come back
            out.proc.send_signal(signal.SIGSTOP)
            await asyncio.to_thread(world.server.restart)
        async with raw_client(world.server, carol, pshow="chat", pstatus=status) as c:
            await round_trip(c)
            out.proc.send_signal(signal.SIGCONT)
            await interapp_online(c, world.alice[0])
            c.send_presence(pshow="away", pstatus="brb")
            later = await out.until(lambda e: of(carol)(e) and e["status_text"] == "brb")
            if not any(of(bob)(e) and e["state"] == "offline" for e in later):
                later += await out.until(lambda e: of(bob)(e) and e["state"] == "offline")
    shown = [(e["state"], e["status_text"]) for e in first + later if of(carol)(e)]
    assert shown[0] == ("online", status) and shown[-1] == ("away", "brb"), shown
    # Prosody tells its clients that carol went offline as it shuts down (a real change,
    # shown); ejabberd does not: then carol is simply online as before, which is no news
    assert all(a != b for a, b in itertools.pairwise(shown)), shown
    if isinstance(world.server, EjabberdServer):
        assert shown == [("online", status), ("away", "brb")], shown
    # bob left while the watch was away: ejabberd says nothing of it, the watch still does
    assert [e["state"] for e in later if of(bob)(e)][-1] == "offline"


# --- the plug-in in this process ---------------------------------------------------------------


async def test_a_fresh_read_waits_for_presence_but_not_long(world: World) -> None:
    bob, carol = await buddy(world), await buddy(world)  # carol stays offline
    async with raw_client(world.server, bob, pshow="away", pstatus="lunch") as b:
        await round_trip(b)
        plugin = XmppPlugin(TargetConfig("x", "xmpp", world.server.url))
        try:
            await plugin.login({"username": world.alice[0], "password": Secret(world.alice[1])})
            t0 = time.monotonic()
            found = {x.username: (x.presence, x.status_text) for x in await plugin.buddies()}
            took = time.monotonic() - t0
            assert found[bob[0]] == ("away", "lunch") and found[carol[0]] == ("offline", "")
            assert took < LIMIT + 2.0, took  # bounded even though carol never answers
        finally:
            await plugin.close()
