"""``interapp agent``: run the long-lived host, ask whether one runs, manage its API tokens."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from interapp.agent.client import RemoteHost, find_agent
from interapp.agent.tokens import TokenStore
from interapp.cli.common import interactive, passphrase
from interapp.cli.output import JSON_OPTION, emit
from interapp.paths import data_home

JsonOpt = Annotated[bool, JSON_OPTION]
agent_app = typer.Typer(help="The long-running local host and its local API (docs/agent.md).")
token_app = typer.Typer(no_args_is_help=True,
                        help="Tokens for applications that use the agent's API.")


@agent_app.callback(invoke_without_command=True)
def agent(ctx: typer.Context,
          socket: Annotated[Path | None, typer.Option(
              "--socket", help="The Unix socket to listen on (default: agent.sock in the "
              "data folder).")] = None,
          port: Annotated[int | None, typer.Option(
              "--port", min=0, max=65535, help="Also listen on 127.0.0.1:PORT (0: any free "
              "port), for programs that cannot use a Unix socket.")] = None,
          allow_origin: Annotated[list[str] | None, typer.Option(
              "--allow-origin", help="A web origin whose pages may call the agent over "
              "--port (repeatable), e.g. http://localhost:3000.")] = None) -> None:
    """Run the agent for the data folder until SIGTERM or Ctrl+C: it keeps every linked
    target connected, holds presence and serves the local API."""
    if ctx.invoked_subcommand is not None:
        return
    from interapp.extras import require

    require("web", "interapp agent")
    from interapp.agent.server import run

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run(data_home(), socket_file=socket, port=port,
                       allowed_origins=tuple(allow_origin or ()),
                       passphrase=passphrase if interactive() else None))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (``uvicorn[standard]`` brings it, and uvicorn itself would
    pick it): the agent is all socket I/O, and on uvloop its local API answers a ``state``
    in ~0.3 ms instead of ~0.4 ms, a send ~10 % sooner (bench/agent_bench.py). The default
    loop otherwise (``INTERAPP_AGENT_LOOP=asyncio`` forces it)."""
    if os.environ.get("INTERAPP_AGENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _ago(started: str) -> str:
    try:
        seconds = int((datetime.now(UTC) - datetime.fromisoformat(started)).total_seconds())
    except ValueError:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@agent_app.command("status")
def status(as_json: JsonOpt = False) -> None:
    """Whether an agent runs for the data folder, since when, and each target's state."""
    home = data_home()
    endpoint = find_agent(home)
    if endpoint is None:
        emit({"running": False, "home": str(home)},
             f"interapp agent: not running (data folder {home})", as_json=as_json)
        raise typer.Exit(1)

    async def read() -> dict[str, Any]:
        async with RemoteHost(endpoint) as remote:
            return remote.state

    state = asyncio.run(read())
    where = str(endpoint.socket) + (f" and http://127.0.0.1:{endpoint.port}"
                                    if endpoint.port else "")
    started = datetime.fromisoformat(endpoint.started_at).astimezone(UTC)
    lines = [f"interapp agent: running since {started:%Y-%m-%d %H:%M:%S} UTC "
             f"({_ago(endpoint.started_at)}, pid {endpoint.pid}) on {where}"]
    local = state.get("local")
    if local is None:
        lines.append("no local application configured")
    else:
        lines.append(f"local application {local['server']}, signed in as "
                     f"{state.get('user') or 'nobody'}")
    held = state["presence"]
    if held["held"]:
        text = f" — {held['status_text']}" if held["status_text"] else ""
        lines.append(f"presence held: {held['state']}{text}")
    for t in state["targets"]:
        who = f" as {t['account']}" if t.get("account") else ""
        link = t.get("link_state") or "no link"
        why = f" ({t['problem']})" if t.get("problem") and t["state"] != "connected" else ""
        ask = " — waiting for a prompt answer" if t.get("prompt") else ""
        lines.append(f"  {t['name']:<14} {t['state']:<13} {link:<13}{who}{why}{ask}")
    emit({"running": True, "pid": endpoint.pid, "started_at": endpoint.started_at,
          "socket": str(endpoint.socket), "port": endpoint.port, "user": state.get("user"),
          "presence": held, "targets": state["targets"]}, "\n".join(lines), as_json=as_json)


@token_app.command("create")
def token_create(name: Annotated[str, typer.Argument(help="A name for the application.")],
                 as_json: JsonOpt = False) -> None:
    """Make a token for an application; it is printed once (only its hash is kept)."""
    token = TokenStore(data_home()).create(name)
    if not as_json:
        sys.stderr.write(f"agent token {name!r} (shown only now; keep it like a password):\n")
    emit({"name": name, "token": token}, token, as_json=as_json)


@token_app.command("list")
def token_list(as_json: JsonOpt = False) -> None:
    """The named tokens (never the tokens themselves)."""
    found = TokenStore(data_home()).list()
    rows = [{"name": t.name, "created_at": datetime.fromtimestamp(t.created_at, UTC)
             .isoformat()} for t in found]
    emit({"tokens": rows}, "\n".join(f"{r['name']}\t{r['created_at']}" for r in rows)
         or "no agent tokens", as_json=as_json)


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(help="The token to revoke.")],
                 as_json: JsonOpt = False) -> None:
    """Revoke a token (a running agent refuses it within a second)."""
    TokenStore(data_home()).revoke(name)
    emit({"revoked": name}, f"agent token {name} revoked", as_json=as_json)


def register(root: typer.Typer) -> None:
    """Attach ``agent`` to the root command."""
    agent_app.add_typer(token_app, name="token")
    root.add_typer(agent_app, name="agent")
