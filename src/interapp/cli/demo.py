"""``interapp demo``: the whole claim-1 story, on embedded SQLite, in a few seconds.

Three applications run in this process: ``arena`` (a game platform: the local application),
``arena-chat`` (shares arena's account system) and ``chatter`` (an IM service with its own
accounts). alice logs in to arena; the host connects arena-chat with no prompt (RFC 8693 →
RFC 7523), links chatter after a prompt, shows one buddy list, chats with bob on chatter, sees
bob come online, and finally starts again to show that the stored link is used without a prompt.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from interapp.errors import InterappError
from interapp.host.config import LocalApp, Target
from interapp.host.prompts import Prompter, PromptRequest, Scripted, Terminal
from interapp.host.runtime import Host, WatchEvent, target_secret_name
from interapp.plugins.interapp_server.api import ServerClient
from interapp.secret import Secret

PASSWORDS = {"alice@arena": "arena-pw", "alice@chatter": "chatter-pw", "bob@chatter": "bob-pw"}


def _say(step: str, text: str) -> None:
    sys.stdout.write(f"{step:>4}  {text}\n")
    sys.stdout.flush()


class _DemoPrompter:
    """Shows the prompt like the terminal would, answered by the script (``--yes``)."""

    interactive = False

    def __init__(self, answers: dict[str, str]) -> None:
        self._inner = Scripted(answers)
        self._username = answers.get("username", "")

    async def ask(self, request: PromptRequest) -> Any:
        labels = ", ".join(f.label for f in request.fields)
        _say("", f"  prompt from {request.target}: {request.reason}")
        _say("", f"  → asks for {labels}; answered by --yes with username "
                 f"'{self._username}' and a password (not shown)")
        return await self._inner.ask(request)


async def _setup_apps(data: Path) -> dict[str, Any]:
    from interapp.server import accounts, passwords, social
    from interapp.server.storage import Database

    made: dict[str, Any] = {}
    for app in ("arena", "arena-chat", "chatter"):
        db = Database.open(f"sqlite:///{data / app}.db")
        async with db.begin() as conn:
            if app == "arena":
                await accounts.create_user(conn, "alice", display_name="Alice",
                                           password_hash=passwords.hash_sync(
                                               Secret(PASSWORDS["alice@arena"])))
            elif app == "arena-chat":
                alice = await accounts.create_user(conn, "alice", display_name="Alice")
                carol = await accounts.create_user(conn, "carol", display_name="Carol")
                await social.make_buddies(conn, alice, carol)
            else:
                alice = await accounts.create_user(conn, "alice", display_name="Alice C.",
                                                   password_hash=passwords.hash_sync(
                                                       Secret(PASSWORDS["alice@chatter"])))
                bob = await accounts.create_user(conn, "bob", display_name="Bob",
                                                 password_hash=passwords.hash_sync(
                                                     Secret(PASSWORDS["bob@chatter"])))
                await social.make_buddies(conn, alice, bob)
            made[app] = await accounts.create_client(conn, "demo-host", public=False)
        await db.close()
    return made


async def _run(yes: bool, data: Path) -> None:
    from interapp.server import accounts
    from interapp.server.embedded import EmbeddedServer
    from interapp.server.storage import Database

    t0 = time.perf_counter()
    _say("1.", "starting three applications on embedded SQLite (in "
               f"{data}): arena (game platform, the local app), arena-chat (shares arena's "
               "accounts), chatter (an IM service with its own accounts)")
    clients = await _setup_apps(data)
    async with EmbeddedServer("arena", f"sqlite:///{data}/arena.db") as arena, \
            EmbeddedServer("arena-chat", f"sqlite:///{data}/arena-chat.db") as arena_chat, \
            EmbeddedServer("chatter", f"sqlite:///{data}/chatter.db") as chatter:
        db = Database.open(f"sqlite:///{data}/arena-chat.db")
        async with db.begin() as conn:  # arena-chat trusts arena: the shared account system
            # alice and carol were made here before arena's URL was known: arena may sign in
            # to these local accounts (a second trusted issuer would not)
            await accounts.trust_issuer(conn, arena.url, jwks=None, jwks_url=None,
                                        may_sign_in_local_accounts=True)
        await db.close()
        _say("", f"arena {arena.url} · arena-chat {arena_chat.url} · chatter {chatter.url}")
        home = data / "host"
        home.mkdir(exist_ok=True)
        env = {**os.environ, "INTERAPP_VAULT_KEY": base64.b64encode(os.urandom(32)).decode()}

        async with Host(home, env=env) as host:
            cid, secret = clients["arena"]
            host.set_local(LocalApp(arena.url, cid, arena.url), secret)
            me = await host.login("alice", Secret(PASSWORDS["alice@arena"]))
            _say("2.", f"alice logged in to arena as {me['display_name']}")
            targets = {
                "arena-chat": Target("arena-chat", "interapp", arena_chat.url,
                                     clients["arena-chat"][0], "shared"),
                "chatter": Target("chatter", "interapp", chatter.url, clients["chatter"][0],
                                  "separate")}
            host.config.save_targets(targets)
            for name in targets:
                host.vault.put_secret(target_secret_name(name), clients[name][1])
            _say("3.", "the host loads the 'interapp' plug-in (entry point interapp.plugins) "
                       "for two targets")
            await _connect(host, "arena-chat", _DemoPrompter({}), "4.")
            prompter: Prompter = _DemoPrompter({"username": "alice",
                                                "password": PASSWORDS["alice@chatter"]})
            if not yes and Terminal.available():
                _say("", "(chatter's password for alice is 'chatter-pw')")
                prompter = Terminal({"username": "alice"})
            await _connect(host, "chatter", prompter, "5.")
            await _buddies(host, "6.")
            await _chat(host, chatter.url, clients["chatter"], "7.")

        _say("8.", "starting the host again (a new process would do the same): no prompt now")
        async with Host(home, env=env) as host:
            await _connect(host, "chatter", _NoPrompt(), "", stored=True)
            await _connect(host, "arena-chat", _NoPrompt(), "")
            links = host.vault.list_links()
            _say("", "links in the vault: " + ", ".join(
                f"{ln.target} → {ln.remote_account_name} ({ln.state})" for ln in links))
            report = host.vault.verify_audit()
            _say("", f"audit log: {report.entries} hash-chained entries, chain "
                     f"{'intact' if report.ok else 'BROKEN'}")
    _say("9.", f"done in {time.perf_counter() - t0:.1f} s")


class _NoPrompt:
    interactive = False

    async def ask(self, request: PromptRequest) -> Any:
        raise InterappError("the demo expected no prompt here")


async def _connect(host: Host, name: str, prompter: Prompter, step: str, *,
                   stored: bool = False) -> None:
    outcome = await host.connect(name, prompter)
    if outcome.failure is not None:
        raise outcome.failure
    c = outcome.connection
    assert c is not None
    _say(step, f"connected to {name} as {c.profile.username} — branch: {c.branch}")
    for line in outcome.trace.splitlines():
        _say("", f"  {line}")


async def _buddies(host: Host, step: str) -> None:
    _say(step, "one buddy list across targets:")
    for name, conn in sorted(host.connections.items()):
        for b in await conn.plugin.buddies():
            status = f" — {b.status_text}" if b.status_text else ""
            _say("", f"  {name:<11} {b.username:<6} {b.display_name:<9} {b.presence}{status}")


async def _chat(host: Host, chatter_url: str, client: tuple[Any, Any], step: str) -> None:
    bob = ServerClient(chatter_url, client_id=client[0], client_secret=client[1])
    sink: asyncio.Queue[WatchEvent] = asyncio.Queue()
    stream = asyncio.create_task(host.stream("chatter", _NoPrompt(), sink))
    try:
        await asyncio.sleep(0.3)  # the stream is subscribed
        tokens = await bob.password_grant("bob", Secret(PASSWORDS["bob@chatter"]))
        bob.access_token = Secret(tokens["access_token"])
        await bob.api("PUT", "/v1/presence", json={"state": "online",
                                                    "status_text": "in the lobby"})
        event = await asyncio.wait_for(sink.get(), 5)
        _say(step, f"live: {event.event.data['username']} came online on chatter "
                   f"({event.event.data['status_text']})")
        conn = host.connections["chatter"]
        await conn.plugin.send("bob", "hi bob, game tonight?", os.urandom(8).hex())
        _say("", "alice → bob (via the chatter plug-in): hi bob, game tonight?")
        await bob.api("POST", "/v1/messages", json={"to": "alice", "body": "sure, 9pm!",
                                                    "client_msg_id": "bob-1"})
        while True:
            event = await asyncio.wait_for(sink.get(), 5)
            if event.event.type == "message" and event.event.data["from"] == "bob":
                _say("", f"live: bob → alice: {event.event.data['body']}")
                break
    finally:
        stream.cancel()
        await asyncio.gather(stream, return_exceptions=True)
        await bob.aclose()


async def _run_network(network: str, yes: bool, data: Path) -> None:
    """The same story against a real network server started here (Synapse or Prosody)."""
    from interapp.host.registry import discover
    from interapp.plugins.contract import TargetConfig
    from interapp.server.embedded import EmbeddedServer

    t0 = time.perf_counter()
    if network == "matrix":
        from interapp.plugins.matrix.demo import prepare_demo
    elif network == "xmpp":
        from interapp.plugins.xmpp.demo import prepare_demo  # type: ignore[assignment]
    else:
        raise InterappError(f"--network must be matrix or xmpp, not {network!r}")
    _say("1.", f"starting a local {network} server (this takes a few seconds) and arena")
    net = await prepare_demo(data)
    try:
        clients = await _setup_apps(data)
        server_url = str(net.get("server") or net.get("homeserver"))
        alice, bob = net["accounts"]["alice"], net["accounts"]["bob"]
        async with EmbeddedServer("arena", f"sqlite:///{data}/arena.db") as arena:
            _say("", f"arena {arena.url} · {network} {server_url}")
            home = data / "host"
            home.mkdir(exist_ok=True)
            env = {**os.environ,
                   "INTERAPP_VAULT_KEY": base64.b64encode(os.urandom(32)).decode()}
            async with Host(home, env=env) as host:
                cid, secret = clients["arena"]
                host.set_local(LocalApp(arena.url, cid, arena.url), secret)
                await host.login("alice", Secret(PASSWORDS["alice@arena"]))
                _say("2.", "alice logged in to arena")
                host.config.save_targets({network: Target(network, network, server_url,
                                                          tls=net.get("tls"))})
                prompter: Prompter = _DemoPrompter({"username": alice["username"],
                                                    "password": alice["password"]})
                if not yes and Terminal.available():
                    _say("", f"({network} account {alice['username']}, password "
                             f"'{alice['password']}')")
                    prompter = Terminal({"username": alice["username"]})
                await _connect(host, network, prompter, "3.")
                await _buddies(host, "4.")
                cls = discover().get(network).load()
                peer = cls(TargetConfig(name="bob", plugin=network, server=server_url,
                                        tls=net.get("tls")))
                try:
                    login = await peer.login({"username": bob["username"],
                                              "password": Secret(bob["password"])})
                    await peer.open(login.credential)
                    sink: asyncio.Queue[WatchEvent] = asyncio.Queue()
                    stream = asyncio.create_task(host.stream(network, _NoPrompt(), sink))
                    try:
                        await asyncio.sleep(1.0)
                        await peer.set_presence("online", "in the lobby")
                        conn = host.connections[network]
                        await conn.plugin.send(login.remote_account_name, "hi bob, game "
                                               "tonight?", os.urandom(8).hex())
                        _say("5.", f"alice → bob over {network}: hi bob, game tonight?")
                        await peer.send(alice.get("user_id") or alice["username"],
                                        "sure, 9pm!", os.urandom(8).hex())
                        seen: set[str] = set()
                        while seen != {"presence", "message"}:
                            item = await asyncio.wait_for(sink.get(), 20)
                            d = item.event.data
                            if item.event.type == "presence" and "presence" not in seen \
                                    and d.get("username") == login.remote_account_name \
                                    and d.get("status_text") == "in the lobby":
                                seen.add("presence")
                                _say("", f"live: {d['username']} is {d['state']} "
                                         f"({d.get('status_text', '')})")
                            elif item.event.type == "message" and d.get("body") == "sure, 9pm!":
                                seen.add("message")
                                _say("", f"live: {d['from']} → alice: {d['body']}")
                    finally:
                        stream.cancel()
                        await asyncio.gather(stream, return_exceptions=True)
                finally:
                    await peer.close()
            _say("6.", "starting the host again: the stored link is used, no prompt")
            async with Host(home, env=env) as host:
                await _connect(host, network, _NoPrompt(), "")
    finally:
        net["stop"]()
    _say("7.", f"done in {time.perf_counter() - t0:.1f} s")


def demo(yes: Annotated[bool, typer.Option(
             "--yes", help="Answer the prompt from the script (non-interactive).")] = False,
         keep: Annotated[bool, typer.Option(
             "--keep", help="Keep the demo's data folder and print where it is.")] = False,
         network: Annotated[str | None, typer.Option(
             "--network", help="Run against a real network started here: matrix (Synapse) "
             "or xmpp (Prosody).")] = None) -> None:
    """Run the whole story: SSO to arena-chat, link chatter after a prompt, chat, reuse link."""
    if network is not None and network not in ("matrix", "xmpp"):
        raise InterappError(f"--network must be matrix or xmpp, not {network!r}")
    tmp = tempfile.mkdtemp(prefix="interapp-demo-")
    try:
        if network is None:
            asyncio.run(_run(yes, Path(tmp)))
        else:
            asyncio.run(_run_network(network, yes, Path(tmp)))
    finally:
        if keep:
            sys.stdout.write(f"data kept in {tmp}\n")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def register(root: typer.Typer) -> None:
    """Attach ``demo``."""
    root.command("demo")(demo)
