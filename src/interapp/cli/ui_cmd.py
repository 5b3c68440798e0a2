"""``interapp ui``: the local application's web face on 127.0.0.1 (see docs/web.md)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from interapp.cli.common import interactive
from interapp.errors import ConfigError
from interapp.paths import data_home


def ui(host: Annotated[str, typer.Option(
           "--host", help="Address to listen on (loopback only, unless --allow-remote).")
       ] = "127.0.0.1",
       port: Annotated[int, typer.Option(
           "--port", min=0, max=65535, help="Port to listen on (0: any free port).")] = 0,
       no_browser: Annotated[bool, typer.Option(
           "--no-browser", help="Do not open a browser; just print the address.")] = False,
       allow_remote: Annotated[bool, typer.Option(
           "--allow-remote", help="Allow a non-loopback --host (plain HTTP: only on a "
           "network you trust).")] = False) -> None:
    """Serve the web UI (buddies, chat, links, prompts) on this computer."""
    from interapp.extras import require

    require("web", "interapp ui")
    from interapp.web.server import is_loopback, serve

    if not is_loopback(host) and not allow_remote:
        raise ConfigError(f"--host {host} is not a loopback address: the UI would be reachable "
                          "from the network over plain HTTP; add --allow-remote if you mean it")
    asyncio.run(serve(data_home(), host=host, port=port, open_browser=not no_browser,
                      interactive=interactive()))


def register(root: typer.Typer) -> None:
    """Attach ``ui`` to the root command."""
    root.command("ui")(ui)
