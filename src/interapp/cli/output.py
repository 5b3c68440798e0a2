"""Output helpers shared by every command: one line for people, one JSON object for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from interapp.errors import ConfigError


def emit(data: dict[str, Any] | list[Any], line: str, *, as_json: bool) -> None:
    """Print ``line`` for people, or ``data`` as one JSON document with ``--json``."""
    if as_json:
        sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    else:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def read_secret_line(what: str) -> str:
    """Read one line (a password or client secret) from standard input."""
    if sys.stdin is None:
        raise ConfigError(f"--{what}-stdin given but there is no standard input")
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise ConfigError(f"--{what}-stdin given but standard input was empty")
    return value


def ask_password(prompt: str = "Password", *, confirm: bool = False) -> str:
    """Prompt on the terminal without echo."""
    value: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return value


JSON_OPTION = typer.Option("--json", help="Print one JSON object instead of a line of text.")
