"""The host's command line end to end, against real application servers in real processes.

Three ``interapp serve`` processes (SQLite files) play the applications of the demo: ``arena``
(the local application), ``chatter`` (an IM service with its own accounts) and ``arena-chat``
(which trusts arena's issuer: the same account system). They are set up with ``interapp admin``
subprocesses. The host is then driven only through ``interapp …`` subprocesses with
``INTERAPP_HOME`` (a fresh data folder) and ``INTERAPP_VAULT_KEY`` set and standard input that is
never a terminal; the other side of each conversation (bob, dave, erin) talks to chatter over
HTTP with httpx, as any other client of that server would.

The tests of this module share one world and run in file order: the link is made early, used
by the chat commands, and destroyed by ``unlink`` near the end; the last test greps the data
folder and every command's output for every secret seen on the way.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from interapp.vault import Vault

pytestmark = pytest.mark.slow

PW = {
    "alice@arena": "arena-" + secrets.token_urlsafe(12),
    "alice@chatter": "chatter-" + secrets.token_urlsafe(12),
    "bob@chatter": "bob-" + secrets.token_urlsafe(12),
    "dave@chatter": "dave-" + secrets.token_urlsafe(12),
    "erin@chatter": "erin-" + secrets.token_urlsafe(12),
}
WRONG_PASSWORD = "wrong-" + secrets.token_urlsafe(12)
APPS = ("arena", "chatter", "arena-chat")


@dataclass
class Peer:
    """A user of one server talking to it directly over HTTP (not through the host)."""

    username: str
    http: httpx.Client

    def get(self, path: str, **kw: Any) -> Any:
        resp = self.http.get(path, **kw)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def send(self, to: str, body: str) -> dict[str, Any]:
        resp = self.http.post("/v1/messages", json={"to": to, "body": body,
                                                    "client_msg_id": secrets.token_hex(8)})
        assert resp.status_code == 201, resp.text
        out: dict[str, Any] = resp.json()
        return out


@dataclass
class World:
    """The servers, the host's data folder and command runner, and every secret seen."""

    tmp: Path
    home: Path
    servers: dict[str, Any]
    clients: dict[str, dict[str, str]]  # app -> {"client_id", "client_secret"} of the host
    peer_client: dict[str, str]  # chatter client used by bob, dave, erin
    cli: Any
    admin: Any
    secrets: set[str] = field(default_factory=set)
    peers: list[Peer] = field(default_factory=list)

    def url(self, app: str) -> str:
        return str(self.servers[app].url)

    def db(self, app: str) -> str:
        return str(self.servers[app].db_url)

    def login_peer(self, username: str) -> Peer:
        """Password grant at chatter's /oauth/token; the access token then goes to /v1."""
        http = httpx.Client(base_url=self.url("chatter"), timeout=10)
        resp = http.post("/oauth/token", data={
            "grant_type": "password", "username": username,
            "password": PW[f"{username}@chatter"]},
            auth=(self.peer_client["client_id"], self.peer_client["client_secret"]))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        self.secrets.update({body["access_token"], body["refresh_token"]})
        http.headers["Authorization"] = f"Bearer {body['access_token']}"
        peer = Peer(username, http)
        self.peers.append(peer)
        return peer

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 at chatter, authenticated as the host's chatter client."""
        c = self.clients["chatter"]
        resp = httpx.post(f"{self.url('chatter')}/oauth/introspect", data={"token": token},
                          auth=(c["client_id"], c["client_secret"]), timeout=10)
        assert resp.status_code == 200, resp.text
        out: dict[str, Any] = resp.json()
        return out

    def open_vault(self) -> Vault:
        return Vault.open(self.home / "vault.db",
                          env={"INTERAPP_VAULT_KEY": self.cli.env["INTERAPP_VAULT_KEY"]})

    def harvest_tokens(self) -> dict[str, dict[str, str]]:
        """Every token the vault holds (decrypted here), remembered for the final grep."""
        found: dict[str, dict[str, str]] = {}
        with self.open_vault() as vault:
            session = vault.get_secret("local:session")
            if session is not None:
                data = json.loads(session.reveal())
                found["local"] = {k: str(v) for k, v in data.items()}
            for link in vault.list_links():
                found[link.target] = dict(vault.read_credential(link.id, audit=False).fields)
        for fields in found.values():
            self.secrets.update(v for k, v in fields.items() if k != "expires_at" and v)
        return found

    def ensure_linked(self) -> None:
        """chatter linked (through the stored link when there is one, else the prompt)."""
        self.cli.ok("connect", "chatter", "--username", "alice", "--password-stdin",
                    input=PW["alice@chatter"] + "\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server_starter: Callable[..., Any],
          host_env_factory: Callable[..., dict[str, str]],
          cli_factory: Callable[[dict[str, str]], Any]) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("host-cli")
    servers = server_starter(tmp, *APPS)
    admin = cli_factory(host_env_factory(tmp / "admin-home"))

    def adm(*args: str, input: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(admin.ok("admin", *args, "--json", input=input).stdout)
        return out

    users = {"arena": [("alice", "Alice")],
             "chatter": [("alice", "Alice C."), ("bob", "Bob"), ("dave", "Dave"),
                         ("erin", "Erin")],
             "arena-chat": [("alice", None), ("carol", "Carol")]}
    for app, people in users.items():
        for name, display in people:
            args = ["add-user", "--app", app, name, "--db", servers[app].db_url]
            if display:
                args += ["--display-name", display]
            password = PW.get(f"{name}@{app}")
            if password:  # arena-chat accounts have no password: SSO only
                adm(*args, "--password-stdin", input=password + "\n")
            else:
                assert adm(*args)["has_password"] is False
    adm("add-contact", "--app", "chatter", "alice", "bob", "--db", servers["chatter"].db_url)
    adm("add-contact", "--app", "arena-chat", "alice", "carol", "--db",
        servers["arena-chat"].db_url)
    trusted = adm("trust-issuer", "--app", "arena-chat", servers["arena"].issuer,
                  "--jwks-url", f"{servers['arena'].url}/.well-known/jwks.json",
                  "--may-sign-in-local-accounts",  # alice and carol were made here above
                  "--db", servers["arena-chat"].db_url)
    assert trusted["keys"] == "url"
    clients = {}
    for app in APPS:
        made = adm("add-client", "--app", app, "interapp-host", "--db", servers[app].db_url)
        clients[app] = {"client_id": made["client_id"], "client_secret": made["client_secret"]}
    peer = adm("add-client", "--app", "chatter", "peer-app", "--db", servers["chatter"].db_url)

    home = tmp / "host-home"
    cli = cli_factory(host_env_factory(home))
    w = World(tmp, home, servers, clients, {"client_id": peer["client_id"],
                                            "client_secret": peer["client_secret"]}, cli, admin)
    w.secrets.update(PW.values())
    w.secrets.add(WRONG_PASSWORD)
    w.secrets.update(c["client_secret"] for c in clients.values())
    w.secrets.add(peer["client_secret"])
    w.secrets.add(cli.env["INTERAPP_VAULT_KEY"])
    try:
        yield w
    finally:
        for p in w.peers:
            p.http.close()


# --- the local application and the targets -----------------------------------------------------


def test_local_and_login(world: World) -> None:
    arena = world.servers["arena"]
    c = world.clients["arena"]
    out = world.cli.ok("local", "--server", arena.url, "--client-id", c["client_id"],
                       "--client-secret-stdin", "--json", input=c["client_secret"] + "\n")
    assert json.loads(out.stdout) == {"server": arena.url, "issuer": arena.issuer,
                                      "client_id": c["client_id"]}
    # a wrong password for the local app: one line, nothing stored
    bad = world.cli.fails("login", "alice", "--password-stdin", input=WRONG_PASSWORD + "\n")
    assert "refused" in bad.stderr
    out = world.cli.ok("login", "alice", "--password-stdin", input=PW["alice@arena"] + "\n")
    assert out.stdout.strip() == f"logged in to {arena.issuer} as alice (Alice)"
    assert "local" in world.harvest_tokens()
    local_toml = (world.home / "local.toml").read_text()
    assert 'username = "alice"' in local_toml
    assert c["client_id"] in local_toml


def test_targets_add_list_remove(world: World) -> None:
    for name, app, system in (("chatter", "chatter", "separate"),
                              ("arena-chat", "arena-chat", "shared")):
        c = world.clients[app]
        out = world.cli.ok("targets", "add", name, "--plugin", "interapp", "--server",
                           world.url(app), "--client-id", c["client_id"],
                           "--client-secret-stdin", "--account-system", system,
                           input=c["client_secret"] + "\n")
        assert out.stdout.strip() == (f"target {name}: interapp at {world.url(app)} "
                                      f"({system} account system)")
    scratch = "scratch-" + secrets.token_hex(6)
    world.secrets.add(scratch)
    world.cli.ok("targets", "add", "scratch", "--plugin", "interapp", "--server",
                 "http://127.0.0.1:9", "--client-id", "nobody", "--client-secret-stdin",
                 input=scratch + "\n")
    listed = json.loads(world.cli.ok("targets", "list", "--json").stdout)["targets"]
    assert {t["name"]: (t["server"], t["account_system"], t["plugin"], t["client_id"])
            for t in listed} == {
        "chatter": (world.url("chatter"), "separate", "interapp",
                    world.clients["chatter"]["client_id"]),
        "arena-chat": (world.url("arena-chat"), "shared", "interapp",
                       world.clients["arena-chat"]["client_id"]),
        "scratch": ("http://127.0.0.1:9", "separate", "interapp", "nobody")}
    with world.open_vault() as vault:
        assert vault.get_secret("target:scratch:client_secret") is not None
    out = world.cli.ok("targets", "remove", "scratch")
    assert out.stdout.strip() == "target scratch removed"
    listed = json.loads(world.cli.ok("targets", "list", "--json").stdout)["targets"]
    assert sorted(t["name"] for t in listed) == ["arena-chat", "chatter"]
    with world.open_vault() as vault:  # its client secret left the vault with it
        assert vault.get_secret("target:scratch:client_secret") is None
    gone = world.cli.fails("targets", "remove", "scratch")
    assert "no target 'scratch'" in gone.stderr
    text = world.cli.ok("targets", "list").stdout.splitlines()
    assert text == [f"arena-chat\tinterapp\t{world.url('arena-chat')}\tshared",
                    f"chatter\tinterapp\t{world.url('chatter')}\tseparate"]


def test_plugins_lists_the_shipped_plugin_with_capabilities(world: World) -> None:
    data = json.loads(world.cli.ok("plugins", "--json").stdout)
    assert data["broken"] == []
    by_name = {p["name"]: p for p in data["plugins"]}
    assert "interapp" in by_name
    shipped = by_name["interapp"]
    assert shipped["version"]
    caps = shipped["capabilities"]
    assert {k: caps.get(k) for k in ("refresh", "presence", "history", "same_account_login")} \
        == {"refresh": True, "presence": True, "history": True, "same_account_login": True}
    assert caps["account_fields"] == [
        {"name": "username", "label": "Username", "secret": False},
        {"name": "password", "label": "Password", "secret": True}]
    assert world.cli.ok("plugins").stdout.startswith("interapp ")


# --- claim 1: the three branches -----------------------------------------------------------------


def test_connect_same_account_system_needs_no_prompt(world: World) -> None:
    out = world.cli.ok("connect", "arena-chat", "--explain", "--no-input")
    assert out.stdout.strip() == "connected to arena-chat as alice (same-account-system)"
    trace = out.stderr
    assert "shared account system" in trace
    assert "Connected(same-account-system)" in trace
    assert "Prompt(" not in trace
    data = json.loads(world.cli.ok("connect", "arena-chat", "--json").stdout)
    assert (data["branch"], data["remote_account"], data["link_state"]) == \
        ("same-account-system", "alice", None)
    links = json.loads(world.cli.ok("links", "--json").stdout)["links"]
    assert {r["target"]: r["state"] for r in links}["arena-chat"] == "not linked"


def test_connect_separate_account_system_prompts_then_links(world: World) -> None:
    # no face to answer: fails at once with one line naming the command that links
    no = world.cli.fails("connect", "chatter", "--no-input", timeout=30)
    assert "interapp connect chatter" in no.stderr
    assert no.stderr.startswith("interapp: error: ")
    # no terminal and no --no-input: the same (never hangs on stdin)
    world.cli.fails("connect", "chatter", timeout=30)

    wrong = world.cli.fails("connect", "chatter", "--username", "alice", "--password-stdin",
                            input=WRONG_PASSWORD + "\n")
    assert "refused" in wrong.stderr and "nothing was stored" in wrong.stderr
    links = json.loads(world.cli.ok("links", "--json").stdout)["links"]
    assert {r["target"]: (r["state"], r["remote_account"]) for r in links}["chatter"] == \
        ("not linked", None)

    right = world.cli.ok("connect", "chatter", "--username", "alice", "--password-stdin",
                         "--explain", input=PW["alice@chatter"] + "\n")
    assert right.stdout.strip() == "connected to chatter as alice (prompt)"
    assert "StoreLink(alice)" in right.stderr and "Connected(prompt)" in right.stderr
    links = json.loads(world.cli.ok("links", "--json").stdout)["links"]
    row = {r["target"]: r for r in links}["chatter"]
    assert (row["state"], row["remote_account"]) == ("linked", "alice")
    assert world.harvest_tokens()["chatter"]["refresh_token"]

    stored = world.cli.ok("connect", "chatter", "--explain", "--no-input")
    assert stored.stdout.strip() == "connected to chatter as alice (stored-link)"
    assert "LoginWithStoredCredential" in stored.stderr
    assert "Connected(stored-link)" in stored.stderr
    assert "Prompt(" not in stored.stderr
    row = {r["target"]: r for r in json.loads(world.cli.ok("links", "--json").stdout)["links"]
           }["chatter"]
    assert row["state"] == "linked" and row["last_used"]


# --- the chat commands ---------------------------------------------------------------------------


def test_contacts_one_table_across_targets(world: World) -> None:
    world.ensure_linked()
    bob = world.login_peer("bob")
    resp = bob.http.put("/v1/presence", json={"state": "online", "status_text": "in the lobby"})
    assert resp.status_code == 200, resp.text
    data = json.loads(world.cli.ok("contacts", "--json").stdout)
    assert data["errors"] == {}
    rows = {(r["target"], r["username"]): r for r in data["contacts"]}
    assert rows == {
        ("arena-chat", "carol"): {"target": "arena-chat", "username": "carol",
                                  "display_name": "Carol", "presence": "offline",
                                  "status_text": "", "activity": None, "activity_text": ""},
        ("chatter", "bob"): {"target": "chatter", "username": "bob", "display_name": "Bob",
                             "presence": "online", "status_text": "in the lobby",
                             "activity": None, "activity_text": ""}}
    one = json.loads(world.cli.ok("contacts", "chatter", "--json").stdout)["contacts"]
    assert [(r["target"], r["username"]) for r in one] == [("chatter", "bob")]
    table = world.cli.ok("contacts").stdout.splitlines()
    assert table[0].split() == ["TARGET", "USERNAME", "DISPLAY", "NAME", "PRESENCE", "STATUS"]
    assert any(line.split()[:2] == ["chatter", "bob"] and "in the lobby" in line
               for line in table[1:])


def test_contacts_add_accept_remove(world: World) -> None:
    world.ensure_linked()
    dave, erin = world.login_peer("dave"), world.login_peer("erin")
    out = world.cli.ok("contacts", "add", "chatter", "dave")
    assert out.stdout.strip() == "asked dave to be your buddy on chatter"
    incoming = dave.get("/v1/contacts/requests")["requests"]
    assert [(r["username"], r["direction"]) for r in incoming] == [("alice", "incoming")]

    resp = erin.http.post("/v1/contacts", json={"username": "alice"})
    assert resp.status_code == 201, resp.text
    out = world.cli.ok("contacts", "accept", "chatter", "erin", "--json")
    assert json.loads(out.stdout) == {"target": "chatter", "action": "accept",
                                      "username": "erin", "ok": True}
    assert [c["username"] for c in erin.get("/v1/contacts")["contacts"]] == ["alice"]
    mine = json.loads(world.cli.ok("contacts", "chatter", "--json").stdout)["contacts"]
    assert sorted(r["username"] for r in mine) == ["bob", "erin"]

    world.cli.ok("contacts", "remove", "chatter", "erin")
    world.cli.ok("contacts", "remove", "chatter", "dave")  # withdraws the pending request
    assert erin.get("/v1/contacts")["contacts"] == []
    assert dave.get("/v1/contacts/requests")["requests"] == []
    mine = json.loads(world.cli.ok("contacts", "chatter", "--json").stdout)["contacts"]
    assert [r["username"] for r in mine] == ["bob"]

    nobody = world.cli.fails("contacts", "accept", "chatter", "nobody")
    assert "nobody" in nobody.stderr
    world.cli.fails("contacts", "add", "chatter")


def test_send_reaches_bob(world: World) -> None:
    world.ensure_linked()
    bob = world.login_peer("bob")
    text = f"hi bob, game tonight? {secrets.token_hex(4)}"
    out = json.loads(world.cli.ok("send", "chatter", "bob", text, "--json").stdout)
    assert (out["target"], out["to"], out["body"]) == ("chatter", "bob", text)
    history = bob.get("/v1/conversations/alice/messages")["messages"]
    assert history[-1]["body"] == text
    assert (history[-1]["from"], history[-1]["to"]) == ("alice", "bob")
    assert history[-1]["message_id"] == out["message_id"]
    world.cli.fails("send", "chatter", "bob", "   ")


def _read_line(proc: subprocess.Popen[str], wait: float) -> str | None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], wait)
    return proc.stdout.readline() if ready else None


def _catch_live_message(world: World, bob: Peer, tag: str) -> tuple[dict[str, Any], int]:
    """Run ``watch --count 1`` while bob sends messages until it prints one.

    Returns the printed event and how many messages bob sent (a watch with no saved cursor
    starts from "now", so bob keeps sending until the stream is subscribed).
    """
    proc = world.cli.popen("watch", "chatter", "--json", "--count", "1", "--timeout", "20")
    sent = 0
    line = None
    try:
        deadline = time.monotonic() + 25
        while line is None and time.monotonic() < deadline and proc.poll() is None:
            bob.send("alice", f"{tag} live {sent}")
            sent += 1
            line = _read_line(proc, 1.0)
        rest, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert line, f"watch printed nothing; stderr: {err}"
    assert rest == ""
    return json.loads(line), sent


def test_watch_prints_bob_messages_and_resumes_from_the_last_seq(world: World) -> None:
    world.ensure_linked()
    bob = world.login_peer("bob")
    tag = secrets.token_hex(4)
    event, sent = _catch_live_message(world, bob, tag)
    assert (event["target"], event["type"], event["from"], event["to"]) == \
        ("chatter", "message", "bob", "alice")
    assert event["body"].startswith(f"{tag} live ")
    printed = int(event["body"].rsplit(" ", 1)[1])

    # nothing is watching now; the next watch resumes after the last seq it saw
    bob.send("alice", f"{tag} while away")
    expected = [f"{tag} live {i}" for i in range(printed + 1, sent)] + [f"{tag} while away"]
    out = world.cli.ok("watch", "chatter", "--json", "--count", str(len(expected)),
                       "--timeout", "15")
    events = [json.loads(x) for x in out.stdout.splitlines()]
    assert [e["body"] for e in events] == expected
    assert all(int(e["cursor"]) > int(event["cursor"]) for e in events)
    # a quiet stream with --timeout ends by itself, exit 0, nothing printed
    quiet = world.cli.ok("watch", "chatter", "--json", "--timeout", "1")
    assert quiet.stdout == ""


def test_watch_text_shows_a_buddy_coming_online(world: World) -> None:
    world.ensure_linked()
    bob = world.login_peer("bob")
    resp = bob.http.put("/v1/presence", json={"state": "offline", "status_text": ""})
    assert resp.status_code == 200
    world.cli.ok("watch", "chatter", "--json", "--count", "1", "--timeout", "10")  # skip it
    resp = bob.http.put("/v1/presence", json={"state": "online", "status_text": "ready"})
    assert resp.status_code == 200
    out = world.cli.ok("watch", "chatter", "--count", "1", "--timeout", "10")
    assert out.stdout.strip() == "[chatter] bob came online (ready)"


def test_status_reaches_every_connected_target(world: World) -> None:
    world.ensure_linked()
    bob = world.login_peer("bob")
    out = world.cli.ok("status", "--state", "away", "in a match")
    assert out.stdout.strip() == "away — in a match on arena-chat, chatter"
    seen = {c["username"]: c for c in bob.get("/v1/contacts")["contacts"]}
    assert (seen["alice"]["presence"], seen["alice"]["status_text"]) == ("away", "in a match")
    data = json.loads(world.cli.ok("status", "--state", "online", "back", "--json").stdout)
    assert (data["targets"], data["errors"]) == (["arena-chat", "chatter"], {})
    seen = {c["username"]: c for c in bob.get("/v1/contacts")["contacts"]}
    assert (seen["alice"]["presence"], seen["alice"]["status_text"]) == ("online", "back")
    world.harvest_tokens()


def test_history_is_newest_last(world: World) -> None:
    world.ensure_linked()
    bob = world.login_peer("bob")
    tag = secrets.token_hex(4)
    world.cli.ok("send", "chatter", "bob", f"{tag} one")
    bob.send("alice", f"{tag} two")
    world.cli.ok("send", "chatter", "bob", f"{tag} three")
    data = json.loads(world.cli.ok("history", "chatter", "bob", "--json").stdout)
    assert (data["target"], data["with"]) == ("chatter", "bob")
    msgs = data["messages"]
    assert [m["body"] for m in msgs[-3:]] == [f"{tag} one", f"{tag} two", f"{tag} three"]
    assert [(m["from"], m["to"]) for m in msgs[-3:]] == \
        [("alice", "bob"), ("bob", "alice"), ("alice", "bob")]
    assert [m["sent_at"] for m in msgs] == sorted(m["sent_at"] for m in msgs)
    two = json.loads(world.cli.ok("history", "chatter", "bob", "--limit", "2", "--json")
                     .stdout)["messages"]
    assert [m["body"] for m in two] == [f"{tag} two", f"{tag} three"]
    text = world.cli.ok("history", "chatter", "bob", "--limit", "1").stdout
    assert text.strip().endswith(f"alice: {tag} three")


def test_links_verify_audit(world: World) -> None:
    world.ensure_linked()
    out = world.cli.ok("links", "--verify-audit")
    assert "audit chain: ok" in out.stdout
    data = json.loads(world.cli.ok("links", "--verify-audit", "--json").stdout)
    assert data["audit"]["ok"] is True and data["audit"]["entries"] > 3
    assert {r["target"]: r["state"] for r in data["links"]} == {
        "arena-chat": "not linked", "chatter": "linked"}


def test_connect_as_another_account_over_a_live_link_is_refused(world: World) -> None:
    world.ensure_linked()
    out = world.cli.run("connect", "chatter", "--username", "bob", "--password-stdin",
                        input=PW["bob@chatter"] + "\n")
    assert out.returncode == 1 and len(out.stderr_lines) == 1, out.describe()
    assert "chatter is linked to alice, not bob" in out.stderr
    assert "interapp unlink chatter" in out.stderr
    assert out.stdout == ""
    same = world.cli.ok("connect", "chatter", "--username", "alice", "--password-stdin",
                        input=PW["alice@chatter"] + "\n")
    assert same.stdout.strip() == "connected to chatter as alice (stored-link)"
    row = {r["target"]: r for r in json.loads(world.cli.ok("links", "--json").stdout)["links"]
           }["chatter"]
    assert (row["state"], row["remote_account"]) == ("linked", "alice")


def _sqlite(path: Path, *statements: str, **params: Any) -> list[Any]:
    """Edit a vault file as anyone who can write it would (no key, no interapp)."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        rows = [row for st in statements for row in conn.execute(st, params).fetchall()]
        conn.commit()
        return rows
    finally:
        conn.close()


def test_audit_cut_behind_an_older_head_fails_verify_audit(world: World,
                                                           tmp_path: Path) -> None:
    """Issue 16 item 8, the exact attack on a copy of this host's vault: drop the last audit
    entries, copy back the sealed head saved when the log ended there."""
    import shutil

    world.ensure_linked()
    [(keep,)] = _sqlite(world.home / "vault.db", "SELECT max(seq) FROM audit")
    [(saved,)] = _sqlite(world.home / "vault.db", "SELECT value FROM meta WHERE key = 'audit_head'")
    # the host goes on: the grant is revoked at chatter, the link needs re-authentication,
    # the user signs in again (the same link is repaired)
    world.admin.ok("admin", "revoke", "--app", "chatter", "alice", "--db", world.db("chatter"))
    world.cli.fails("connect", "chatter", "--no-input")
    world.ensure_linked()
    assert json.loads(world.cli.ok("links", "--verify-audit", "--json").stdout)["audit"]["ok"]
    copy = tmp_path / "home"
    shutil.copytree(world.home, copy)
    vault = copy / "vault.db"
    _sqlite(vault, "DROP TRIGGER audit_no_delete", "DELETE FROM audit WHERE seq > :keep",
            keep=keep)
    _sqlite(vault, "UPDATE meta SET value = :head WHERE key = 'audit_head'", head=saved)
    env = {**world.cli.env, "INTERAPP_HOME": str(copy)}
    out = world.cli.fails("links", "--verify-audit", env=env)
    assert f"audit chain: BROKEN ({keep} entries, first bad seq {keep + 1})" in out.stdout
    (why,) = out.stderr_lines
    assert f"the audit chain is broken at entry {keep + 1}" in why
    assert "the log does not account for the vault's rows" in why
    assert f"entries after seq {keep} are missing" in why
    data = json.loads(world.cli.run("links", "--verify-audit", "--json", env=env).stdout)
    assert data["audit"]["ok"] is False and data["audit"]["first_bad_seq"] == keep + 1
    # the real vault is untouched and still verifies
    assert json.loads(world.cli.ok("links", "--verify-audit", "--json").stdout)["audit"]["ok"]


def test_revoked_grant_needs_reauth_and_repairs_the_same_link(world: World) -> None:
    world.ensure_linked()
    with world.open_vault() as vault:
        (before,) = vault.list_links()
    revoked = json.loads(world.admin.ok("admin", "revoke", "--app", "chatter", "alice", "--db",
                                        world.db("chatter"), "--json").stdout)
    assert revoked["revoked_logins"] >= 1
    no = world.cli.fails("connect", "chatter", "--no-input")
    # not the missing-link message: it says the link needs re-auth, why, and how
    assert "no prompt is available" in no.stderr and "needs your account details" not in \
        no.stderr
    assert "link to alice on chatter needs re-authentication" in no.stderr, no.stderr
    assert "refresh token refused" in no.stderr, no.stderr  # the plug-in's own reason
    assert "interapp connect chatter --username alice --password-stdin" in no.stderr
    row = {r["target"]: r for r in json.loads(world.cli.ok("links", "--json").stdout)["links"]
           }["chatter"]
    assert row["state"] == "needs_reauth" and "refused" in row["reason"]
    again = world.cli.fails("connect", "chatter", "--no-input")  # the reason is kept
    assert "refresh token refused" in again.stderr, again.stderr
    text = [line for line in world.cli.ok("links").stdout.splitlines()
            if line.startswith("chatter")]
    assert "needs_reauth (" in text[0] and "refresh token refused" in text[0], text
    # answering the prompt with another remote account is refused, the link is kept
    other = world.cli.fails("connect", "chatter", "--username", "bob", "--password-stdin",
                            input=PW["bob@chatter"] + "\n")
    assert "unlink" in other.stderr
    out = world.cli.ok("connect", "chatter", "--username", "alice", "--password-stdin",
                       "--explain", input=PW["alice@chatter"] + "\n")
    assert out.stdout.strip() == "connected to chatter as alice (reauth)"
    assert f"RepairLink({before.id}" in out.stderr
    with world.open_vault() as vault:
        (after,) = vault.list_links()
    assert (after.id, after.remote_account_id, str(after.state)) == \
        (before.id, before.remote_account_id, "linked")
    world.harvest_tokens()


def test_unlink_revokes_at_the_target_then_forgets(world: World) -> None:
    world.ensure_linked()
    creds = world.harvest_tokens()["chatter"]
    refresh, access = creds["refresh_token"], creds["access_token"]
    assert world.introspect(refresh)["active"] is True
    out = world.cli.ok("unlink", "chatter")
    assert out.stdout.strip() == ("unlinked chatter: revoked at the target; local credential "
                                  "destroyed")
    assert world.introspect(refresh) == {"active": False}
    assert world.introspect(access) == {"active": False}
    row = {r["target"]: r for r in json.loads(world.cli.ok("links", "--json").stdout)["links"]
           }["chatter"]
    assert (row["state"], row["remote_account"]) == ("not linked", None)
    again = world.cli.fails("connect", "chatter", "--no-input")
    assert "interapp connect chatter" in again.stderr
    twice = world.cli.fails("unlink", "chatter")
    assert "no link to chatter" in twice.stderr
    assert world.cli.ok("links", "--verify-audit", "--json").stdout.count('"ok": true') == 1
    with world.open_vault() as vault:
        assert vault.list_links() == []


def test_unlink_says_plainly_when_the_remote_revocation_failed(world: World) -> None:
    world.ensure_linked()
    refresh = world.harvest_tokens()["chatter"]["refresh_token"]
    c = world.clients["chatter"]
    add = ("targets", "add", "chatter", "--plugin", "interapp", "--server",
           world.url("chatter"), "--client-id", c["client_id"], "--client-secret-stdin")
    # chatter refuses this host's client now (RFC 7009 answers invalid_client)
    world.cli.ok(*add, input="not-the-client-secret\n")
    try:
        out = world.cli.run("unlink", "chatter")
    finally:
        world.cli.ok(*add, input=c["client_secret"] + "\n")
    assert out.returncode != 0, out.describe()
    # a partial failure is a failure: one line on stderr saying what happened on each side
    assert out.stderr.count("\n") == 1, out.describe()
    assert "unlinked chatter here, but remote revocation FAILED" in out.stderr, out.describe()
    with world.open_vault() as vault:
        assert vault.list_links() == []
    assert world.introspect(refresh)["active"] is True  # as reported: the target still has it


def test_watch_count_does_not_lose_the_events_it_did_not_print(world: World) -> None:
    world.ensure_linked()
    bob = world.login_peer("bob")
    tag = secrets.token_hex(4)
    _catch_live_message(world, bob, tag + "-prime")  # a cursor is saved
    world.cli.ok("watch", "chatter", "--json", "--timeout", "2")  # drain what is left
    for i in range(3):
        bob.send("alice", f"{tag} {i}")
    got = []
    for _ in range(3):
        out = world.cli.run("watch", "chatter", "--json", "--count", "1", "--timeout", "3")
        got += [json.loads(x)["body"] for x in out.stdout.splitlines()]
    assert got == [f"{tag} 0", f"{tag} 1", f"{tag} 2"]


# --- the command line's own contract -------------------------------------------------------------

COMMANDS = [(), ("local",), ("login",), ("targets",), ("targets", "add"), ("targets", "list"),
            ("targets", "remove"), ("plugins",), ("connect",), ("links",), ("unlink",),
            ("contacts",), ("send",), ("history",), ("watch",), ("status",), ("demo",),
            ("serve",), ("admin",)]


def test_every_command_has_help(world: World) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda cmd: world.cli.run(*cmd, "--help"), COMMANDS))
    for cmd, result in zip(COMMANDS, results, strict=True):
        assert result.returncode == 0, result.describe()
        assert "Usage:" in result.stdout and "--help" in result.stdout, cmd
        assert result.stderr == "", result.describe()


BAD = [("connect",), ("frobnicate",), ("targets", "add", "BAD", "--plugin", "interapp",
                                        "--server", "http://x"),
       ("targets", "add", "x", "--plugin", "no-such-plugin", "--server", "http://x"),
       ("targets", "add", "x", "--plugin", "interapp", "--server", "ftp://x"),
       ("targets", "add", "x", "--plugin", "interapp", "--server", "http://x",
        "--account-system", "both"),
       ("status", "--state", "sleepy", "x"), ("history", "chatter", "bob", "--limit", "0"),
       ("watch", "--count", "0"), ("connect", "no-such-target"), ("links", "--bogus"),
       ("login", "alice"), ("local", "--server", "nope", "--client-id", "x"),
       ("login", "alice", "--password-stdin")]


def test_wrong_arguments_fail_with_one_line(world: World) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda cmd: world.cli.run(*cmd), BAD))
    for result in results:
        assert result.returncode != 0, result.describe()
        assert len(result.stderr_lines) == 1, result.describe()
        assert result.stderr.startswith("interapp: error: "), result.describe()
        assert "Traceback" not in result.stderr


def test_no_secret_anywhere_in_the_data_folder_or_the_output(world: World) -> None:
    world.harvest_tokens()
    assert len(world.secrets) >= 15
    files = [p for p in world.home.rglob("*") if p.is_file()]
    assert world.home / "vault.db" in files
    for path in files:
        data = path.read_bytes()
        for secret in world.secrets:
            assert secret.encode() not in data, f"a secret is in plain text in {path}"
    for result in world.cli.transcript:
        for secret in world.secrets:
            assert secret not in result.stdout and secret not in result.stderr, \
                f"a secret was printed by interapp {' '.join(result.args)}"
    for path in files:
        if path.name.startswith("vault.db") or path.suffix == ".toml":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(os.stat(world.home).st_mode) == 0o700


# --- the main job ---------------------------------------------------------------------------------


def test_demo_runs_the_whole_story(tmp_path: Path, cli_factory: Callable[..., Any],
                                   host_env_factory: Callable[..., dict[str, str]]) -> None:
    env = host_env_factory(tmp_path / "home", TMPDIR=str(tmp_path))
    t0 = time.monotonic()
    out = cli_factory(env).ok("demo", "--yes", timeout=60)
    elapsed = time.monotonic() - t0
    assert elapsed < 30, f"demo took {elapsed:.1f} s"
    text = out.stdout
    assert "connected to arena-chat as alice — branch: same-account-system" in text
    assert "connected to chatter as alice — branch: prompt" in text
    assert "connected to chatter as alice — branch: stored-link" in text
    assert "bob came online on chatter" in text
    assert "live: bob → alice:" in text
    assert "chain intact" in text
    assert text.index("branch: prompt") < text.index("branch: stored-link")
    for password in ("arena-pw", "chatter-pw", "bob-pw"):
        assert f"'{password}'" not in text  # the scripted password is never shown
    assert list(tmp_path.glob("interapp-demo-*")) == []  # cleaned up
