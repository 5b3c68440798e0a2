"""``interapp demo``: the whole claim-1 story, on embedded SQLite, in a few seconds.

Three applications run in this process: ``arena`` (a game platform: the local application),
``arena-chat`` (shares arena's account system) and ``chatter`` (an IM service with its own
accounts). alice logs in to arena; the host connects arena-chat with no prompt (RFC 8693 →
RFC 7523), links chatter after a prompt, shows one buddy list, chats with bob on chatter, sees
bob come online, and finally starts again to show that the stored link is used without a prompt.

bob is another user of arena with a host of his own (in memory): the demo shows two local
users, each with a :class:`~interapp.host.Host`, and uses nothing but the host SDK.
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

from interapp.host import (
    Host,
    InterappError,
    Prompter,
    PromptRequest,
    PromptUnavailable,
    Scripted,
    Terminal,
    events,
)

PASSWORDS = {"alice@arena": "arena-pw", "bob@arena": "arena-bob-pw",
             "alice@chatter": "chatter-pw", "bob@chatter": "bob-pw"}


def _say(step: str, text: str) -> None:
    sys.stdout.write(f"{step:>4}  {text}\n")
    sys.stdout.flush()


class _DemoPrompter:
    """Shows the prompt like the terminal would, answered by the script (``--yes``)."""

    interactive = False

    def __init__(self, answers: dict[str, str], *, quiet: bool = False) -> None:
        self._inner = Scripted(answers)
        self._username = answers.get("username", "")
        self._quiet = quiet

    async def ask(self, request: PromptRequest) -> Any:
        if not self._quiet:
            labels = ", ".join(f.label for f in request.fields)
            _say("", f"  prompt from {request.target}: {request.reason}")
            _say("", f"  → asks for {labels}; answered by --yes with username "
                     f"'{self._username}' and a password (not shown)")
        return await self._inner.ask(request)


class _NoPrompt:
    interactive = False

    async def ask(self, request: PromptRequest) -> Any:
        raise PromptUnavailable("the demo expected no prompt here")


async def _setup_apps(data: Path) -> dict[str, Any]:
    from interapp.secret import Secret
    from interapp.server import accounts, passwords, social
    from interapp.server.storage import Database

    def pw(key: str) -> str:
        return passwords.hash_sync(Secret(PASSWORDS[key]))

    made: dict[str, Any] = {}
    for app in ("arena", "arena-chat", "chatter"):
        db = Database.open(f"sqlite:///{data / app}.db")
        async with db.begin() as conn:
            if app == "arena":
                await accounts.create_user(conn, "alice", display_name="Alice",
                                           password_hash=pw("alice@arena"))
                await accounts.create_user(conn, "bob", display_name="Bob",
                                           password_hash=pw("bob@arena"))
            elif app == "arena-chat":
                alice = await accounts.create_user(conn, "alice", display_name="Alice")
                carol = await accounts.create_user(conn, "carol", display_name="Carol")
                await social.make_buddies(conn, alice, carol)
            else:
                alice = await accounts.create_user(conn, "alice", display_name="Alice C.",
                                                   password_hash=pw("alice@chatter"))
                bob = await accounts.create_user(conn, "bob", display_name="Bob",
                                                 password_hash=pw("bob@chatter"))
                await social.make_buddies(conn, alice, bob)
            made[app] = await accounts.create_client(conn, "demo-host", public=False)
        await db.close()
    return made


async def _trust(db_url: str, issuer: str) -> None:
    from interapp.server import accounts
    from interapp.server.storage import Database

    db = Database.open(db_url)
    async with db.begin() as conn:  # arena-chat trusts arena: the shared account system
        # alice and carol were made here before arena's URL was known: arena may sign in to
        # these local accounts (a second trusted issuer would not)
        await accounts.trust_issuer(conn, issuer, jwks=None, jwks_url=None,
                                    may_sign_in_local_accounts=True)
    await db.close()


async def _run(yes: bool, data: Path) -> None:
    from interapp.server.embedded import EmbeddedServer

    t0 = time.perf_counter()
    _say("1.", "starting three applications on embedded SQLite (in "
               f"{data}): arena (game platform, the local app), arena-chat (shares arena's "
               "accounts), chatter (an IM service with its own accounts)")
    clients = await _setup_apps(data)
    async with EmbeddedServer("arena", f"sqlite:///{data}/arena.db") as arena, \
            EmbeddedServer("arena-chat", f"sqlite:///{data}/arena-chat.db") as arena_chat, \
            EmbeddedServer("chatter", f"sqlite:///{data}/chatter.db") as chatter:
        await _trust(f"sqlite:///{data}/arena-chat.db", arena.url)
        _say("", f"arena {arena.url} · arena-chat {arena_chat.url} · chatter {chatter.url}")
        home = data / "host"
        key = base64.b64encode(os.urandom(32)).decode()
        servers = {"arena-chat": (arena_chat.url, "shared"), "chatter": (chatter.url,
                                                                          "separate")}

        async with Host.open(home, vault_key=key) as host:
            cid, secret = clients["arena"]
            await host.set_local(arena.url, client_id=cid, client_secret=secret)
            me = await host.sign_in("alice", PASSWORDS["alice@arena"])
            _say("2.", f"alice logged in to arena as {me.display_name}")
            for name, (url, system) in servers.items():
                await host.add_target(name, plugin="interapp", server=url,
                                      client_id=clients[name][0],
                                      client_secret=clients[name][1], account_system=system)
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
            async with Host.open(memory=True) as bob:
                await bob.set_local(arena.url, client_id=cid, client_secret=secret)
                await bob.sign_in("bob", PASSWORDS["bob@arena"])
                await bob.add_target("chatter", plugin="interapp", server=chatter.url,
                                     client_id=clients["chatter"][0],
                                     client_secret=clients["chatter"][1])
                await bob.connect("chatter", _DemoPrompter(
                    {"username": "bob", "password": PASSWORDS["bob@chatter"]}, quiet=True))
                await _chat(host, bob, "chatter", "bob", "alice", "7.")

        _say("8.", "starting the host again (a new process would do the same): no prompt now")
        async with Host.open(home, vault_key=key) as host:
            await _connect(host, "chatter", _NoPrompt(), "", stored=True)
            await _connect(host, "arena-chat", _NoPrompt(), "")
            links = await host.links()
            _say("", "links in the vault: " + ", ".join(
                f"{ln.target} → {ln.remote_account} ({ln.state})" for ln in links))
            report = await host.verify_audit()
            _say("", f"audit log: {report.entries} hash-chained entries, chain "
                     f"{'intact' if report.ok else 'BROKEN'}")
    _say("9.", f"done in {time.perf_counter() - t0:.1f} s")


async def _connect(host: Host, name: str, prompter: Prompter, step: str, *,
                   stored: bool = False) -> None:
    c = await host.connect(name, prompter)
    _say(step, f"connected to {name} as {c.account} — branch: {c.branch}")
    for line in c.explain.splitlines():
        _say("", f"  {line}")


async def _buddies(host: Host, step: str) -> None:
    _say(step, "one buddy list across targets:")
    for b in sorted(await host.buddies(), key=lambda b: (b.target, b.username)):
        status = f" — {b.status_text}" if b.status_text else ""
        _say("", f"  {b.target:<11} {b.username:<6} {b.display_name:<9} {b.presence}{status}")


async def _chat(alice: Host, bob: Host, target: str, bob_name: str, alice_name: str,
                step: str) -> None:
    """bob comes online and answers; alice sees both live (each user has a host of his own)."""
    async with alice.events() as stream:
        await asyncio.sleep(0.3)  # the stream is subscribed
        await bob.set_presence("online", "in the lobby", targets=[target])
        while True:
            event = await asyncio.wait_for(anext(stream), 20)
            if isinstance(event, events.BuddyPresence) and not event.own and \
                    event.status_text == "in the lobby":
                seen = "came online" if event.previous == "offline" else f"is {event.state}"
                _say(step, f"live: {event.username} {seen} on {target} ({event.status_text})")
                break
        await alice.send(target, bob_name, "hi bob, game tonight?")
        _say("", f"alice → bob (via the {target} target): hi bob, game tonight?")
        await bob.send(target, alice_name, "sure, 9pm!")
        while True:
            event = await asyncio.wait_for(anext(stream), 20)
            if isinstance(event, events.MessageReceived) and not event.message.own:
                _say("", f"live: bob → alice: {event.message.body}")
                break


async def _run_network(network: str, yes: bool, data: Path) -> None:
    """The same story against a real network server started here (Synapse or Prosody)."""
    from interapp.server.embedded import EmbeddedServer
    from interapp.testing.networks import prepare

    t0 = time.perf_counter()
    _say("1.", f"starting a local {network} server (this takes a few seconds) and arena")
    net = await prepare(network, data)
    try:
        clients = await _setup_apps(data)
        server_url = str(net["server"])
        alice, bob = net["accounts"]["alice"], net["accounts"]["bob"]
        async with EmbeddedServer("arena", f"sqlite:///{data}/arena.db") as arena:
            _say("", f"arena {arena.url} · {network} {server_url}")
            home = data / "host"
            key = base64.b64encode(os.urandom(32)).decode()
            cid, secret = clients["arena"]
            async with Host.open(home, vault_key=key) as host:
                await host.set_local(arena.url, client_id=cid, client_secret=secret)
                await host.sign_in("alice", PASSWORDS["alice@arena"])
                _say("2.", "alice logged in to arena")
                await host.add_target(network, plugin=network, server=server_url,
                                      tls=net.get("tls"))
                prompter: Prompter = _DemoPrompter({"username": alice["username"],
                                                    "password": alice["password"]})
                if not yes and Terminal.available():
                    _say("", f"({network} account {alice['username']}, password "
                             f"'{alice['password']}')")
                    prompter = Terminal({"username": alice["username"]})
                await _connect(host, network, prompter, "3.")
                await _buddies(host, "4.")
                async with Host.open(memory=True) as peer:
                    await peer.set_local(arena.url, client_id=cid, client_secret=secret)
                    await peer.sign_in("bob", PASSWORDS["bob@arena"])
                    await peer.add_target(network, plugin=network, server=server_url,
                                          tls=net.get("tls"))
                    c = await peer.connect(network, _DemoPrompter(
                        {"username": bob["username"], "password": bob["password"]},
                        quiet=True))
                    mine = await host.connect(network)
                    await _chat(host, peer, network, c.account, mine.account, "5.")
            _say("6.", "starting the host again: the stored link is used, no prompt")
            async with Host.open(home, vault_key=key) as host:
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
    from interapp.extras import require

    require("server", "interapp demo (it runs three application servers)")
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
