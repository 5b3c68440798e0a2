"""Shared plumbing of the host's commands: opening the host, choosing the prompter, running.

The commands use only :mod:`interapp.host`'s public names (a test checks it).
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from interapp.cli.output import read_secret_line
from interapp.host import Host, NoInput, Prompter, Scripted, Terminal

T = TypeVar("T")

NoInputOpt = Annotated[bool, typer.Option(
    "--no-input", help="Never prompt; fail with the command to run instead.")]
UsernameOpt = Annotated[str | None, typer.Option(
    "--username", help="The opposite account's username (answers the prompt; a stored link "
    "to another account is refused).")]
PasswordStdinOpt = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the opposite account's password from standard input.")]


def interactive() -> bool:
    """True when a person is at a terminal."""
    return sys.stdin is not None and sys.stdin.isatty()


def make_prompter(*, no_input: bool = False, username: str | None = None,
                  password_stdin: bool = False) -> Prompter:
    """Pick the face that answers prompts for this command."""
    if no_input:
        return NoInput()
    if password_stdin:
        answers = {"password": read_secret_line("password")}
        if username:
            answers["username"] = username
        return Scripted(answers)
    if Terminal.available():
        return Terminal({"username": username} if username else None)
    return NoInput()


def _passphrase() -> str:
    return getpass.getpass("Vault passphrase: ", stream=sys.stderr)


def run_host(work: Callable[[Host], Awaitable[T]], prompter: Prompter | None = None) -> T:
    """Open the host on the data folder, run ``work``, and close everything."""

    async def go() -> T:
        async with Host.open(prompter=prompter,
                             passphrase=_passphrase if interactive() else None) as host:
            return await work(host)

    return asyncio.run(go())
