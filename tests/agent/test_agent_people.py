"""``interapp people`` and ``/agent/v1/people…`` over real servers: the command line in its own
process (with and without a running agent) and the agent's local API.

arena is the local app; chatter and talk are two IM services. bob is ``bob`` on chatter and
``bobby`` ("Bob") on talk; carol is ``carol`` on both.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from agent_kit import AgentProcess, World, wait_until

from interapp.secret import Secret
from interapp.testing.servers import ThreadedServer

pytestmark = pytest.mark.slow
PW = "pw-" + secrets.token_urlsafe(8)
USERS = {"arena": (("alice", "Alice"),),
         "chatter": (("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol"))[:3],
         "talk": (("alice", "Alice"), ("bobby", "Bob"), ("carol", "Carol K."))}


def _seed(server: ThreadedServer, app: str) -> None:
    from interapp.server import accounts, passwords, social
    from interapp.server.storage import Database

    async def work() -> None:
        db = Database.open(server.db_url)
        try:
            async with db.begin() as conn:
                made = [await accounts.create_user(
                    conn, u, display_name=d, password_hash=passwords.hash_sync(Secret(PW)))
                    for u, d in USERS[app]]
                for other in made[1:]:
                    await social.make_buddies(conn, made[0], other)
        finally:
            await db.close()

    server.call(work)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("people")
    servers = {app: ThreadedServer(app, tmp / f"{app}.db").start() for app in USERS}
    clients: dict[str, tuple[str, str]] = {}
    for app, srv in servers.items():
        _seed(srv, app)
        for kind in ("host", "peer"):
            cid, secret = srv.create_client(kind)
            assert secret is not None
            clients[f"{app}-{kind}"] = (cid, secret.reveal())
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")}
    env.update(INTERAPP_HOME=str(tmp / "home"), INTERAPP_VAULT_KEYRING="0",
               INTERAPP_VAULT_KEY=base64.b64encode(os.urandom(32)).decode())
    w = World(tmp, tmp / "home", env, servers, clients)
    w.cli("local", "--server", servers["arena"].url, "--client-id",
          clients["arena-host"][0], "--client-secret-stdin",
          input=clients["arena-host"][1] + "\n")
    w.cli("login", "alice", "--password-stdin", input=PW + "\n")
    for name in ("chatter", "talk"):
        w.cli("targets", "add", name, "--plugin", "interapp", "--server", servers[name].url,
              "--client-id", clients[f"{name}-host"][0], "--client-secret-stdin",
              input=clients[f"{name}-host"][1] + "\n")
        w.cli("connect", name, "--username", "alice", "--password-stdin", input=PW + "\n")
    yield w
    w.stop()


def say(w: World, app: str, user: str, body: str) -> None:
    """``user`` writes to alice from another client of ``app``."""
    cid, secret = w.clients[f"{app}-peer"]
    url = w.servers[app].url
    token = httpx.post(f"{url}/oauth/token", auth=(cid, secret), timeout=10, data={
        "grant_type": "password", "username": user, "password": PW}).json()["access_token"]
    resp = httpx.post(f"{url}/v1/messages", headers={"Authorization": f"Bearer {token}"},
                      json={"to": "alice", "body": body,
                            "client_msg_id": secrets.token_hex(8)}, timeout=10)
    assert resp.status_code == 201, resp.text


def _error_line(w: World, *args: str) -> str:
    r = w.cli(*args, check=False)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.describe()
    return r.stderr.strip()


def test_the_command_line_merges_lists_and_refuses_bad_input(world: World) -> None:
    w = world
    listed = json.loads(w.cli("--no-agent", "people", "--json").stdout)
    assert listed["people"] == []
    assert {(s["reason"], tuple((a["target"], a["user"]) for a in s["accounts"]))
            for s in listed["suggestions"]} == {
        ("same display name", (("chatter", "bob"), ("talk", "bobby"))),
        ("same user name", (("chatter", "carol"), ("talk", "carol")))}
    out = w.cli("--no-agent", "people", "merge", "chatter:bob", "talk:bobby", "--name", "Bob")
    assert out.stdout.startswith("Bob is chatter:bob, talk:bobby (p_")
    carol = json.loads(w.cli("--no-agent", "people", "merge", "chatter:carol", "talk:carol",
                             "--json").stdout)
    assert carol["name"] == "Carol"  # the first account's display name
    assert "no target 'nowhere'" in _error_line(w, "--no-agent", "people", "merge",
                                                "chatter:bob", "nowhere:bob")
    assert "'zed' is not a buddy on talk" in _error_line(w, "--no-agent", "people", "merge",
                                                         "chatter:bob", "talk:zed")
    assert "talk:bobby is already in person 'Bob'" in _error_line(
        w, "--no-agent", "people", "merge", "chatter:carol", "talk:bobby")
    assert "TARGET:USER" in _error_line(w, "--no-agent", "people", "merge", "bob", "talk:x")
    assert "no person 'Dave'" in _error_line(w, "--no-agent", "people", "split", "Dave")
    assert "no person 'Dave'" in _error_line(w, "--no-agent", "send", "Dave", "hi")
    assert "no message given" in _error_line(w, "--no-agent", "send", "chatter", "bob")
    assert "nor is chatter:nobody part of any person" in _error_line(
        w, "--no-agent", "people", "split", "chatter:nobody")
    listed = json.loads(w.cli("--no-agent", "people", "--json").stdout)
    assert [p["name"] for p in listed["people"]] == ["Bob", "Carol"]
    assert listed["suggestions"] == []  # both merged already
    data = json.loads(w.cli("--no-agent", "contacts", "--json").stdout)
    assert len(data["contacts"]) == 4  # the buddy rows, as before
    assert sorted(r["name"] for r in data["people"]) == ["Bob", "Carol"]  # one row a person
    table = w.cli("--no-agent", "contacts").stdout.splitlines()
    assert len(table) == 3 and sum(" Bob " in line for line in table) == 1, table
    freed = json.loads(w.cli("--no-agent", "people", "split", "talk:carol", "--json").stdout)
    assert sorted((a["target"], a["user"]) for a in freed["freed"]) == [
        ("chatter", "carol"), ("talk", "carol")]
    assert [p["name"] for p in freed["people"]] == ["Bob"]


def test_through_the_agent_a_person_gets_messages_where_they_were_last_active(
        world: World) -> None:
    w = world
    w.cli("--no-agent", "people", "merge", "chatter:bob", "talk:bobby", "--name", "Bob")
    agent = AgentProcess(w)
    try:
        with agent.http() as api:
            rows = api.get("/agent/v1/contacts", params={"merged": "1"}).json()["contacts"]
            (bob,) = [r for r in rows if r["name"] == "Bob"]
            assert {(a["target"], a["user"]) for a in bob["accounts"]} == {
                ("chatter", "bob"), ("talk", "bobby")}
            single = api.get("/agent/v1/contacts", params={"merged": "0"}).json()["contacts"]
            assert all(r["person_id"] is None for r in single) and len(single) == len(rows) + 1
            listed = json.loads(w.cli("people", "--json").stdout)  # the CLI, via the agent
            assert [p["name"] for p in listed["people"]] == ["Bob"]
            say(w, "talk", "bobby", "talk to me here")

            def routed() -> bool:
                sent = json.loads(w.cli("send", "Bob", "ping", "--json").stdout)
                return bool(sent["target"] == "talk")

            wait_until(routed, what="a message to Bob routed to talk")
            say(w, "chatter", "bob", "now on chatter")
            wait_until(lambda: json.loads(w.cli("people", "send", "Bob", "pong", "--json")
                                          .stdout)["target"] == "chatter",
                       what="a message to Bob routed to chatter")
            named = api.post("/agent/v1/people/Bob/messages",
                             json={"body": "via talk", "target": "talk"})
            assert named.status_code == 201 and named.json()["target"] == "talk", named.text
            history = api.get("/agent/v1/people/Bob/history", params={"limit": 100}).json()
            bodies = [(m["target"], m["body"]) for m in history["messages"]]
            assert bodies.index(("talk", "talk to me here")) < \
                bodies.index(("chatter", "now on chatter")) < bodies.index(("talk", "via talk"))
            cli_history = json.loads(w.cli("people", "history", "Bob", "--json").stdout)
            assert cli_history["messages"][-1]["body"] == "via talk"
            carol = api.post("/agent/v1/people/merge", json={
                "accounts": ["chatter:carol", {"target": "talk", "user": "carol"}],
                "name": "Carol"})
            assert carol.status_code == 200 and carol.json()["name"] == "Carol", carol.text
            for body, status, code in (
                    ({"accounts": []}, 400, "bad_request"),
                    ({"accounts": ["chatter:bob", "nowhere:x"]}, 404, "not_found"),
                    ({"accounts": ["chatter:bob", "talk:zed"]}, 404, "unknown_account"),
                    ({"accounts": ["chatter:carol", "talk:bobby"]}, 400, "account_in_person"),
                    ({"accounts": ["chatter:bob"], "extra": 1}, 400, "bad_request")):
                resp = api.post("/agent/v1/people/merge", json=body)
                assert (resp.status_code, resp.json()["error"]) == (status, code), resp.text
            assert api.post("/agent/v1/people/split", json={"person": "Nobody"}).json()[
                "error"] == "unknown_person"
            assert [p["name"] for p in api.get("/agent/v1/people").json()["people"]] == [
                "Bob", "Carol"]
            gone = api.post("/agent/v1/people/split", json={"accounts": ["talk:carol"]})
            assert [p["name"] for p in gone.json()["people"]] == ["Bob"], gone.text
    finally:
        agent.terminate()
    # the agent stored where Bob was last active: a command without it routes the same way
    sent = json.loads(w.cli("--no-agent", "send", "Bob", "after the agent", "--json").stdout)
    assert sent["target"] == "chatter"
    w.cli("--no-agent", "people", "split", "Bob")
    assert json.loads(w.cli("--no-agent", "people", "--json", "--no-suggest").stdout)[
        "people"] == []


def test_merges_stay_in_the_data_folder(world: World) -> None:
    w = world
    person = json.loads(w.cli("--no-agent", "people", "merge", "chatter:bob", "talk:bobby",
                              "--name", "Robert", "--json").stdout)
    for srv in w.servers.values():
        db = Path(srv.db_url.removeprefix("sqlite:///"))
        assert person["id"].encode() not in db.read_bytes()
        assert b"Robert" not in db.read_bytes()
    w.cli("--no-agent", "people", "split", person["id"])
