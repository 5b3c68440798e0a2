"""Shared plumbing of the host's commands: opening the host, choosing the prompter, running.

When an agent runs for the data folder (``interapp agent``), :func:`run_host` hands the
command a :class:`~interapp.agent.client.RemoteHost` that does the same through the agent (so
presence lasts, nothing logs in again, events are the agent's); otherwise, or with
``interapp --no-agent``, an in-process :class:`~interapp.host.Host` as always.

The commands use only :mod:`interapp.host`'s public names (a test checks it).
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from interapp.cli.output import read_secret_line
from interapp.host import Host, Messages, NoInput, Prompter, Scripted, Terminal
from interapp.paths import data_home

T = TypeVar("T")
#: ``interapp --no-agent``: never go through a running agent.
IN_PROCESS = {"forced": False}

NoInputOpt = Annotated[bool, typer.Option(
    "--no-input", help="Never prompt; fail with the command to run instead.")]
UsernameOpt = Annotated[str | None, typer.Option(
    "--username", help="The opposite account's username (answers the prompt; a stored link "
    "to another account is refused).")]
PasswordStdinOpt = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the opposite account's password from standard input.")]
ViaOpt = Annotated[str | None, typer.Option(
    "--via", help="How to sign in to the target if needed: browser (its own page in your "
    "browser), device (a code to type on any device; works over SSH) or password (typed "
    "here). Default: the most secure one offered (device when there is no display).")]


def interactive() -> bool:
    """True when a person is at a terminal."""
    return sys.stdin is not None and sys.stdin.isatty()


def make_prompter(*, no_input: bool = False, username: str | None = None,
                  password_stdin: bool = False, via: str | None = None) -> Prompter:
    """Pick the face that answers prompts for this command.

    Without a terminal, ``--via browser`` or ``--via device`` still works: the URL or the code
    (and the progress) go to standard error, nobody has to type here."""
    if no_input:
        return NoInput()
    if password_stdin:
        answers = {"password": read_secret_line("password")}
        if username:
            answers["username"] = username
        return Scripted(answers)
    if Terminal.available():
        return Terminal({"username": username} if username else None)
    if via in ("browser", "device"):
        return Messages()
    return NoInput()


def passphrase() -> str:
    """Ask for the vault passphrase on the terminal."""
    return getpass.getpass("Vault passphrase: ", stream=sys.stderr)


def run_host(work: Callable[[Any], Awaitable[T]], prompter: Prompter | None = None) -> T:
    """Run ``work`` on the running agent (a RemoteHost) or, without one, on a Host opened on
    the data folder; close everything after."""

    async def go() -> T:
        if not IN_PROCESS["forced"]:
            from interapp.agent.client import RemoteHost, find_agent

            endpoint = find_agent(data_home())
            if endpoint is not None:
                async with RemoteHost(endpoint, prompter) as remote:
                    return await work(remote)
        async with Host.open(prompter=prompter,
                             passphrase=passphrase if interactive() else None) as host:
            return await work(host)

    return asyncio.run(go())
