"""One person, many networks, through the host SDK against real interapp servers.

arena is the local application; chatter and talk are two IM services with their own accounts,
each a real server on its own thread. bob is ``bob`` on chatter and ``bobby`` (display name
"Bob") on talk; carol is on both too. Merges are the user's decision, stored beside the vault,
and never reach a server: the servers' access logs are counted to prove it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from interapp.host import (
    AccountInPerson,
    ConfigError,
    Host,
    NotFoundError,
    PeopleChanged,
    PersonAccount,
    PresenceState,
    Scripted,
    Secret,
    UnknownAccount,
    UnknownPerson,
    events,
)
from interapp.testing.servers import ThreadedServer

PW = "pw-people-1"
USERS = {"arena": (("alice", "Alice"),),
         "chatter": (("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")),
         "talk": (("alice", "Alice"), ("bobby", "Bob"), ("carol", "Carol K."))}


@dataclass
class World:
    servers: dict[str, ThreadedServer]
    clients: dict[str, tuple[str, Secret]]

    async def sign_in(self, host: Host) -> None:
        cid, secret = self.clients["arena"]
        await host.set_local(self.servers["arena"].url, client_id=cid, client_secret=secret)
        await host.sign_in("alice", PW)
        for name in ("chatter", "talk"):
            tid, tsecret = self.clients[name]
            await host.add_target(name, plugin="interapp", server=self.servers[name].url,
                                  client_id=tid, client_secret=tsecret)
        for name in ("chatter", "talk"):
            await host.connect(name, Scripted({"username": "alice", "password": PW}))

    def token(self, app: str, user: str) -> str:
        cid, secret = self.clients[app]
        with httpx.Client(base_url=self.servers[app].url, timeout=10) as http:
            resp = http.post("/oauth/token", auth=(cid, secret.reveal()), data={
                "grant_type": "password", "username": user, "password": PW})
            assert resp.status_code == 200, resp.text
            return str(resp.json()["access_token"])

    def act(self, app: str, user: str, method: str, path: str, body: dict[str, Any]) -> None:
        """``user`` does something on ``app`` from another client of theirs."""
        with httpx.Client(base_url=self.servers[app].url, timeout=10) as http:
            resp = http.request(method, path, json=body,
                                headers={"Authorization": f"Bearer {self.token(app, user)}"})
            assert resp.status_code < 300, resp.text

    def say(self, app: str, user: str, body: str) -> None:
        self.act(app, user, "POST", "/v1/messages",
                 {"to": "alice", "body": body, "client_msg_id": os.urandom(8).hex()})

    def presence(self, app: str, user: str, state: str, text: str = "") -> None:
        self.act(app, user, "PUT", "/v1/presence", {"state": state, "status_text": text})


def _seed(server: ThreadedServer, app: str) -> tuple[str, Secret]:
    from interapp.server import accounts, passwords, social
    from interapp.server.storage import Database

    async def work() -> tuple[str, Secret]:
        db = Database.open(server.db_url)
        try:
            async with db.begin() as conn:
                made = [await accounts.create_user(
                    conn, u, display_name=d, password_hash=passwords.hash_sync(Secret(PW)))
                    for u, d in USERS[app]]
                for other in made[1:]:
                    await social.make_buddies(conn, made[0], other)
                cid, secret = await accounts.create_client(conn, "game", public=False)
                assert secret is not None
                return cid, secret
        finally:
            await db.close()

    return server.call(work)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("people")
    servers = {app: ThreadedServer(app, folder / f"{app}.db").start() for app in USERS}
    try:
        yield World(servers, {app: _seed(s, app) for app, s in servers.items()})
    finally:
        for s in servers.values():
            s.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class Requests(logging.Handler):
    """Counts the HTTP requests every server of this process answered (their access log)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(f"{record.__dict__.get('method')} {record.__dict__.get('route')}")

    async def settled(self, quiet: float = 0.5) -> int:
        """How many were seen once none came for ``quiet`` seconds."""
        count = -1
        while count != len(self.seen):
            count = len(self.seen)
            await asyncio.sleep(quiet)
        return count


@pytest.fixture
def requests() -> Iterator[Requests]:
    counter = Requests()
    logger = logging.getLogger("interapp.server.access")
    before = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(counter)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.setLevel(before)


async def _until(stream: Any, check: Any, timeout: float = 15) -> events.Event:
    while True:
        event = await asyncio.wait_for(anext(stream), timeout)
        if check(event):
            return event


@pytest.mark.anyio
async def test_a_merged_person_is_one_row_with_the_best_presence(world: World,
                                                                 tmp_path: Path,
                                                                 key: str) -> None:
    world.presence("chatter", "bob", "away", "afk")
    world.presence("talk", "bobby", "online", "in a match")
    async with Host.open(tmp_path / "home", vault_key=key) as host:
        await world.sign_in(host)
        before = await host.contacts()
        assert sorted((c.target, c.user) for c in before) == [
            ("chatter", "bob"), ("chatter", "carol"), ("talk", "bobby"), ("talk", "carol")]
        assert all(c.person_id is None and len(c.accounts) == 1 for c in before)
        bob = await host.merge_people("chatter:bob", "talk:bobby", name="Bob")
        assert bob.accounts == (PersonAccount("chatter", "bob"), PersonAccount("talk", "bobby"))
        rows = await host.contacts()
        assert rows.problems == {}
        assert [c.name for c in rows].count("Bob") == 1
        (row,) = [c for c in rows if c.person_id == bob.id]
        assert (row.presence, row.status_text, row.target, row.user) == (
            PresenceState.ONLINE, "in a match", "talk", "bobby")
        per = {(a.target, a.user): (a.presence, a.status_text) for a in row.accounts}
        assert per == {("chatter", "bob"): (PresenceState.AWAY, "afk"),
                       ("talk", "bobby"): (PresenceState.ONLINE, "in a match")}
        assert sorted((c.target, c.user) for c in rows if c.person_id is None) == [
            ("chatter", "carol"), ("talk", "carol")]  # not merged: their own rows
        assert len(rows) == 3
        world.presence("talk", "bobby", "offline")
        world.presence("chatter", "bob", "busy", "ranked")
        (row,) = [c for c in await host.contacts() if c.person_id == bob.id]
        assert (row.presence, row.target, row.status_text) == (PresenceState.BUSY, "chatter",
                                                               "ranked")
        assert row.to_dict()["accounts"][1] == {
            "target": "talk", "user": "bobby", "display_name": "Bob", "presence": "offline",
            "status_text": "", "last_active": None, "buddy": True}


@pytest.mark.anyio
async def test_merge_and_split_persist_across_reopen(world: World, tmp_path: Path,
                                                     key: str) -> None:
    home = tmp_path / "home"
    async with Host.open(home, vault_key=key) as host:
        await world.sign_in(host)
        async with host.events() as stream:
            bob = await host.merge_people("chatter:bob", ("talk", "bobby"))
            changed = await _until(stream, lambda e: isinstance(e, PeopleChanged))
        assert bob.name == "Bob"  # the first account's display name
        assert changed.to_dict() == {
            "type": "people_changed", "target": "*", "action": "merged", "person_id": bob.id,
            "accounts": [{"target": "chatter", "user": "bob"},
                         {"target": "talk", "user": "bobby"}]}
        carol = await host.merge_people("chatter:carol", "talk:carol", name="Carol")
    async with Host.open(home, vault_key=key) as host:
        assert await host.people() == [bob, carol]
        assert (await host.person("bob")).id == bob.id  # the name, case aside
        assert (await host.person("talk:carol")).id == carol.id  # one of its accounts
        freed = await host.split_person("talk:bobby")  # bob is left with one: dissolved
        assert sorted(freed) == [("chatter", "bob"), ("talk", "bobby")]
        renamed = await host.rename_person(carol, "Carol K")
    async with Host.open(home, vault_key=key) as host:
        assert await host.people() == [renamed]
        assert await host.split_person("Carol K") == [PersonAccount("chatter", "carol"),
                                                      PersonAccount("talk", "carol")]
    async with Host.open(home, vault_key=key) as host:
        assert await host.people() == []


@pytest.mark.anyio
async def test_suggestions_are_never_merged_by_themselves(world: World, key: str) -> None:
    async with Host.open(memory=True, vault_key=key) as host:
        await world.sign_in(host)
        found = {(s.reason, frozenset(s.accounts)): s for s in await host.suggest_people()}
        bob = frozenset({PersonAccount("chatter", "bob"), PersonAccount("talk", "bobby")})
        carol = frozenset({PersonAccount("chatter", "carol"), PersonAccount("talk", "carol")})
        assert set(found) == {("same display name", bob), ("same user name", carol)}
        assert found[("same display name", bob)].name == "Bob"
        assert await host.people() == []  # suggesting merged nothing
        await host.merge_people("chatter:bob", "talk:bobby")
        again = await host.suggest_people()
        assert [frozenset(s.accounts) for s in again] == [carol]
        assert again[0].to_dict() == {
            "name": "Carol", "reason": "same user name", "person_id": None,
            "accounts": [{"target": "chatter", "user": "carol"},
                         {"target": "talk", "user": "carol"}]}


@pytest.mark.anyio
async def test_a_message_to_a_person_goes_where_they_were_last_active(
        world: World, tmp_path: Path, key: str) -> None:
    home = tmp_path / "home"
    async with Host.open(home, vault_key=key) as host:
        await world.sign_in(host)
        bob = await host.merge_people("chatter:bob", "talk:bobby", name="Bob")
        assert await host.person_route(bob) == ("chatter", "bob")  # nothing known: the first
        async with host.events() as stream:
            await asyncio.sleep(0.5)
            world.say("talk", "bobby", "on talk now")
            await _until(stream, lambda e: isinstance(e, events.MessageReceived)
                         and e.target == "talk" and not e.message.own)
            sent = await host.send_to_person("Bob", "hello there")
            assert (sent.target, sent.recipient) == ("talk", "bobby")
            world.say("chatter", "bob", "back on chatter")
            await _until(stream, lambda e: isinstance(e, events.MessageReceived)
                         and e.target == "chatter" and not e.message.own)
            sent = await host.send_to_person(bob, "and here")
            assert (sent.target, sent.recipient) == ("chatter", "bob")
            named = await host.send_to_person(bob, "on talk please", target="talk")
            assert (named.target, named.recipient) == ("talk", "bobby")
            with pytest.raises(UnknownAccount, match="no account on nowhere"):
                await host.send_to_person(bob, "x", target="nowhere")
    async with Host.open(home, vault_key=key) as host:  # the activity was stored
        assert await host.person_route("Bob") == ("chatter", "bob")
        (row,) = [c for c in await host.contacts() if c.person_id == bob.id]
        active = {a.target: a.last_active for a in row.accounts}
        assert active["chatter"] is not None and active["talk"] is not None
        assert active["chatter"] > active["talk"]
        history = await host.person_history("Bob", limit=50)
        assert history.problems == {}
        mine = [(m.target, m.body) for m in history
                if m.body in ("on talk now", "hello there", "back on chatter", "and here",
                              "on talk please")]
        assert mine == [("talk", "on talk now"), ("talk", "hello there"),
                        ("chatter", "back on chatter"), ("chatter", "and here"),
                        ("talk", "on talk please")]
        times = [m.sent_at for m in history]
        assert len(times) == len(history) and {m.target for m in history} == {"chatter", "talk"}
        last_two = await host.person_history("Bob", limit=2)
        assert [m.body for m in last_two] == ["and here", "on talk please"]


@pytest.mark.anyio
async def test_the_people_store_never_touches_a_server(world: World, tmp_path: Path,
                                                       key: str, requests: Requests) -> None:
    home = tmp_path / "home"
    async with Host.open(home, vault_key=key) as host:
        await world.sign_in(host)
        await host.buddies()  # the lists the merge checks the accounts against
        asked = await requests.settled()  # a server logs a request just after answering it
        assert asked > 0  # the counter does see the servers' requests
        bob = await host.merge_people("chatter:bob", "talk:bobby", name="Bob")
        await host.merge_people("chatter:carol", "talk:carol", name="Carol")
        await host.rename_person("Carol", "Carol K")
        await host.split_person("Carol K")
        assert [p.name for p in await host.people()] == ["Bob"]
        assert await host.person_route(bob) == ("chatter", "bob")
        assert await requests.settled() == asked, requests.seen[asked:]
    async with Host.open(home, vault_key=key) as host:
        assert await host.people() == [bob]
        await host.split_person(bob)
        assert await host.people() == []
    assert await requests.settled() == asked, requests.seen[asked:]
    for server in world.servers.values():  # and no server stored anything of it
        data = Path(server.db_url.removeprefix("sqlite:///")).read_bytes()
        assert bob.id.encode() not in data


@pytest.mark.anyio
async def test_bad_input_is_refused_with_clear_errors(world: World, key: str) -> None:
    async with Host.open(memory=True, vault_key=key) as host:
        await world.sign_in(host)
        with pytest.raises(NotFoundError, match="no target 'nowhere'") as no_target:
            await host.merge_people("chatter:bob", "nowhere:bob")
        assert no_target.value.target == "nowhere"
        with pytest.raises(UnknownAccount, match="'zed' is not a buddy on talk"):
            await host.merge_people("chatter:bob", "talk:zed")
        with pytest.raises(ConfigError, match="TARGET:USER"):
            await host.merge_people("chatter:bob", "bobby")
        with pytest.raises(ConfigError, match="at least two accounts"):
            await host.merge_people("chatter:bob")
        await host.merge_people("chatter:bob", "talk:bobby", name="Bob")
        await host.merge_people("chatter:carol", "talk:carol", name="Carol")
        with pytest.raises(AccountInPerson, match="talk:bobby is already in person 'Bob'"):
            await host.merge_people("chatter:carol", "talk:bobby")
        with pytest.raises(ConfigError, match="already named 'Bob'"):
            await host.rename_person("Carol", "bob")
        with pytest.raises(UnknownPerson, match="no person 'Dave'"):
            await host.split_person("Dave")
        with pytest.raises(UnknownPerson):
            await host.send_to_person("Dave", "hi")
        with pytest.raises(UnknownPerson, match="not part of any person"):
            await host.split_person(("chatter", "alice"))
        assert [p.name for p in await host.people()] == ["Bob", "Carol"]  # nothing changed
        same = await host.merge_people("talk:bobby", "chatter:bob")  # already so: unchanged
        assert same.name == "Bob" and len(same.accounts) == 2


def test_a_blocking_host_has_the_same_people(world: World, tmp_path: Path, key: str) -> None:
    from interapp.host.blocking import BlockingHost

    host = BlockingHost.open(tmp_path / "game", vault_key=key)
    try:
        host.run(world.sign_in(host.host))
        bob = host.merge_people("chatter:bob", "talk:bobby", name="Bob")
        assert [c.name for c in host.contacts() if c.person_id] == ["Bob"]
        assert host.person_route(bob) == ("chatter", "bob")
        assert host.people() == [bob]
        assert host.split_person("Bob") == list(bob.accounts)
    finally:
        host.close()


def test_merged_rows_and_their_table_lines_from_plain_lists() -> None:
    """Contacts.merge on lists the caller already has (no target asked): ties in presence go
    to the account active last; an account its target did not list is offline, buddy False."""
    from datetime import UTC, datetime

    from interapp.cli.chat_cmds import _merged_lines
    from interapp.host import Buddy, Contacts, Person

    buddies = [Buddy("chatter", "1", "bob", "Bob", PresenceState.AWAY, "afk"),
               Buddy("talk", "2", "bobby", "Bob", PresenceState.AWAY, "lunch"),
               Buddy("talk", "3", "carol", "Carol", PresenceState.ONLINE)]
    bob = Person("p_1", "Bob", (PersonAccount("chatter", "bob"), PersonAccount("talk", "bobby"),
                                PersonAccount("xmpp", "bob@x")))
    active = {PersonAccount("talk", "bobby"): datetime(2026, 1, 2, tzinfo=UTC),
              PersonAccount("chatter", "bob"): datetime(2026, 1, 1, tzinfo=UTC)}
    rows = Contacts.merge(buddies, [bob], active)
    assert [(c.name, c.presence, c.target, c.status_text) for c in rows] == [
        ("Carol", PresenceState.ONLINE, "talk", ""), ("Bob", PresenceState.AWAY, "talk", "lunch")]
    assert [(a.target, a.presence, a.buddy) for a in rows[1].accounts] == [
        ("chatter", PresenceState.AWAY, True), ("talk", PresenceState.AWAY, True),
        ("xmpp", PresenceState.OFFLINE, False)]
    lines = _merged_lines(rows, {("chatter", "bob"): "Arena · Ranked 2v2"})
    assert lines[0].split() == ["talk", "carol", "Carol", "online"]
    assert lines[1].split()[:5] == ["talk", "bobby", "Bob", "away", "lunch"]
    assert "(+ chatter:bob away, xmpp:bob@x offline)" in lines[1]
    assert lines[2].strip() == "Arena · Ranked 2v2" and len(lines) == 3
