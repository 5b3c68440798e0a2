"""Helpers of the XMPP tests: the servers' common face, another XMPP client, the real CLI.

Where a test needs "another XMPP client" (to see what went over the wire, to be the user's phone,
or to do something the plug-in contract has no verb for) it uses plain slixmpp through
:func:`raw_client`, independent of the plug-in's code. :class:`Cli` runs the real ``interapp``
command as a subprocess (standard input never a terminal, a time limit, a clean environment);
:func:`linked_cli` gives one whose host is logged in to the local application and linked to an
XMPP account through ``interapp connect``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import slixmpp

from interapp.testing import HomeApp


class XmppServer(Protocol):
    """What :class:`~interapp.testing.prosody.ProsodyServer` and
    :class:`~interapp.testing.ejabberd.EjabberdServer` have in common."""

    url: str
    port: int
    domain: str

    def register(self, user: str, password: str) -> str: ...

    def set_password(self, jid: str, password: str) -> None: ...

    def restart(self) -> None: ...


def new_account(server: XmppServer) -> tuple[str, str]:
    """A fresh account: (bare JID, password)."""
    password = secrets.token_urlsafe(12)
    return server.register(f"u{secrets.token_hex(5)}", password), password


@contextlib.asynccontextmanager
async def raw_client(server: XmppServer, who: tuple[str, str], *, presence: bool = True,
                     resource: str = "raw", **presence_kw: Any) -> AsyncIterator[Any]:
    """Another XMPP client (plain slixmpp) for the same or another account.

    With ``presence`` it sends its initial presence (``presence_kw``: pshow, pstatus,
    ppriority) once it has the roster, like any IM client.
    """
    c = slixmpp.ClientXMPP(f"{who[0]}/{resource}", who[1],
                           plugin_config={"feature_mechanisms": {"unencrypted_scram": True}})
    c.enable_starttls = False
    c.enable_direct_tls = False
    c.enable_plaintext = True
    c.register_plugin("xep_0054")
    c.register_plugin("xep_0199")
    c.auto_authorize = None
    c.auto_subscribe = False
    started = asyncio.ensure_future(c.wait_until("session_start", 10))
    c.connect("127.0.0.1", server.port)
    await started
    await c.get_roster()
    if presence:
        c.send_presence(**presence_kw)
    try:
        yield c
    finally:
        with contextlib.suppress(TimeoutError):  # at once when the server already dropped it
            await asyncio.wait_for(c.disconnect(), 5)


async def round_trip(client: Any) -> None:
    """Ping the server from ``client``: everything it sent before has been handled."""
    await client.plugin["xep_0199"].send_ping(client.boundjid.domain, timeout=10)


@dataclass
class Cli:
    """Runs ``interapp`` commands as subprocesses with one environment."""

    env: dict[str, str]

    @property
    def argv0(self) -> str:
        return str(Path(sys.executable).with_name("interapp"))

    def run(self, *args: str, input: str = "", timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        """``interapp ARGS`` with ``input`` on standard input (never a terminal)."""
        return subprocess.run([self.argv0, *args], input=input, capture_output=True, text=True,
                              timeout=timeout, env=self.env, check=False)

    def ok(self, *args: str, input: str = "", timeout: float = 60) -> str:
        """Like :meth:`run`, asserting exit status 0; returns standard output."""
        done = self.run(*args, input=input, timeout=timeout)
        assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str, **kw: Any) -> Any:
        """Like :meth:`ok` with ``--json``; the parsed output."""
        return json.loads(self.ok(*args, "--json", **kw))

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """``interapp ARGS`` in the background, standard output as a pipe of lines."""
        return subprocess.Popen([self.argv0, *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                bufsize=1, env=self.env)


def linked_cli(home: HomeApp, server: XmppServer, account: tuple[str, str], folder: Path,
               target: str = "x") -> Cli:
    """A host in ``folder`` logged in to ``home`` with target ``target`` linked to
    ``account`` on ``server`` (each step an ``interapp`` command)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")}
    env.update(INTERAPP_HOME=str(folder),
               INTERAPP_VAULT_KEY=base64.b64encode(os.urandom(32)).decode())
    cli = Cli(env)
    user, password = home.new_user()
    cli.ok("local", "--server", home.url, "--client-id", home.client_id,
           "--client-secret-stdin", input=home.client_secret.reveal() + "\n")
    cli.ok("login", user, "--password-stdin", input=password + "\n")
    cli.ok("targets", "add", target, "--plugin", "xmpp", "--server", server.url, "--no-tls")
    cli.ok("connect", target, "--username", account[0], "--password-stdin",
           input=account[1] + "\n")
    return cli
