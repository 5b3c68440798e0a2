"""Using the opposite applications from here: buddies, messages, live events, status."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Annotated, Any

import typer

from interapp.cli.common import NoInputOpt, make_prompter, run_host
from interapp.cli.output import JSON_OPTION, emit
from interapp.errors import ConfigError, InterappError
from interapp.host.driver import Connection
from interapp.host.runtime import Host, WatchEvent, describe_event

JsonOpt = Annotated[bool, JSON_OPTION]
ACTIONS = ("add", "accept", "remove")


def _fail_all(results: dict[str, Any]) -> None:
    errors = {k: v for k, v in results.items() if isinstance(v, InterappError)}
    if errors and len(errors) == len(results):
        first = next(iter(errors.items()))
        raise type(first[1])(f"{first[0]}: {first[1].message}")


def contacts(args: Annotated[list[str] | None, typer.Argument(
                 help="[NAME] to list one target's buddies, or 'add|accept|remove NAME USER'.",
                 metavar="[NAME] | add|accept|remove NAME USER")] = None,
             no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """One table of buddies across targets; or ask, accept or remove a buddy."""
    args = args or []
    prompter = make_prompter(no_input=no_input)
    if args and args[0] in ACTIONS:
        if len(args) != 3:
            raise ConfigError(f"usage: interapp contacts {args[0]} NAME USER")
        action, name, user = args

        async def act(host: Host) -> None:
            conn = await host.connection(name, prompter)
            call = {"add": conn.plugin.add_buddy, "accept": conn.plugin.accept_buddy,
                    "remove": conn.plugin.remove_buddy}[action]
            await host.supervised(name, call(user))

        run_host(act)
        done = {"add": "asked {u} to be your buddy on {n}",
                "accept": "{u} is now your buddy on {n}",
                "remove": "{u} removed from your buddies on {n}"}[action]
        emit({"target": name, "action": action, "username": user, "ok": True},
             done.format(u=user, n=name), as_json=as_json)
        return
    if len(args) > 1:
        raise ConfigError("usage: interapp contacts [NAME] | contacts add|accept|remove NAME USER")

    async def work(host: Host) -> dict[str, Any]:
        async def buddies(conn: Connection) -> list[dict[str, Any]]:
            return [{"target": conn.target.name, "username": b.username,
                     "display_name": b.display_name, "presence": b.presence,
                     "status_text": b.status_text} for b in await conn.plugin.buddies()]

        return await host.each_target(args or None, prompter, buddies)

    results = run_host(work)
    _fail_all(results)
    rows = [row for v in results.values() if isinstance(v, list) for row in v]
    problems = {k: v.message for k, v in results.items() if isinstance(v, InterappError)}
    lines = [f"{r['target']:<12} {r['username']:<16} {r['display_name']:<20} "
             f"{r['presence']:<8} {r['status_text']}" for r in rows]
    lines += [f"{k}: not available ({msg})" for k, msg in problems.items()]
    header = f"{'TARGET':<12} {'USERNAME':<16} {'DISPLAY NAME':<20} {'PRESENCE':<8} STATUS"
    emit({"contacts": rows, "errors": problems}, "\n".join([header, *lines]), as_json=as_json)


def send(name: Annotated[str, typer.Argument(help="The target.")],
         user: Annotated[str, typer.Argument(help="The buddy.")],
         text: Annotated[str, typer.Argument(help="The message.")],
         no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """Send a message to a buddy on a target."""
    if not text.strip():
        raise ConfigError("the message is empty")
    prompter = make_prompter(no_input=no_input)
    client_msg_id = uuid.uuid4().hex

    async def work(host: Host) -> dict[str, Any]:
        conn = await host.connection(name, prompter)
        msg = await host.supervised(name, conn.plugin.send(user, text, client_msg_id))
        return {"target": name, "message_id": msg.id, "to": msg.recipient, "body": msg.body,
                "sent_at": msg.sent_at, "client_msg_id": client_msg_id}

    info = run_host(work)
    emit(info, f"sent to {user} on {name} ({info['message_id']})", as_json=as_json)


def history(name: Annotated[str, typer.Argument(help="The target.")],
            user: Annotated[str, typer.Argument(help="The buddy.")],
            limit: Annotated[int, typer.Option("--limit", min=1, max=200,
                                               help="How many messages.")] = 20,
            no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """The conversation with a buddy, newest last."""
    prompter = make_prompter(no_input=no_input)

    async def work(host: Host) -> list[dict[str, Any]]:
        conn = await host.connection(name, prompter)
        msgs = await host.supervised(name, conn.plugin.history(user, limit=limit))
        return [{"id": m.id, "from": m.sender, "to": m.recipient, "body": m.body,
                 "sent_at": m.sent_at} for m in msgs]

    rows = run_host(work)
    lines = [f"{m['sent_at']}  {m['from']}: {m['body']}" for m in rows]
    emit({"target": name, "with": user, "messages": rows},
         "\n".join(lines) or f"no messages with {user} on {name}", as_json=as_json)


def _line(item: WatchEvent, online: dict[tuple[str, str], str]) -> str:
    data, t = item.event.data, item.target
    if item.event.type == "message":
        return f"[{t}] {data.get('from')} → {data.get('to')}: {data.get('body')}"
    if item.event.type == "presence":
        key = (t, str(data.get("username")))
        before, online[key] = online.get(key, "offline"), str(data.get("state"))
        text = f" ({data['status_text']})" if data.get("status_text") else ""
        if before == "offline" and data.get("state") != "offline":
            return f"[{t}] {data.get('username')} came online{text}"
        return f"[{t}] {data.get('username')} is {data.get('state')}{text}"
    if item.event.type == "contact_request":
        return f"[{t}] {data.get('from')} asks to be your buddy " \
               f"(interapp contacts accept {t} {data.get('from')})"
    if item.event.type == "contact_added":
        return f"[{t}] {data.get('contact', {}).get('username')} is now your buddy"
    if item.event.type == "cursor_reset":
        return f"[{t}] warning: {t} no longer knew where this app left off (its data may " \
               f"have been reset); events in between may be missing"
    return f"[{t}] {item.event.type}"


def watch(name: Annotated[str | None, typer.Argument(help="One target (default: all).")] = None,
          count: Annotated[int | None, typer.Option("--count", min=1,
                                                    help="Stop after N events.")] = None,
          timeout: Annotated[float | None, typer.Option("--timeout", min=0.1,
                                                        help="Stop after S seconds.")] = None,
          no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """Live events across targets, one per line: messages and buddies coming online."""
    prompter = make_prompter(no_input=no_input)

    async def work(host: Host) -> int:
        names = [name] if name else sorted(host.config.targets())
        if not names:
            raise ConfigError("no targets configured")
        for n in names:  # connect first, so that a failure is reported at once
            await host.connection(n, prompter)
        sink: asyncio.Queue[WatchEvent] = asyncio.Queue()
        tasks = [asyncio.create_task(host.stream(n, prompter, sink, autosave=False))
                 for n in names]
        online: dict[tuple[str, str], str] = {}
        seen = 0
        deadline = time.monotonic() + timeout if timeout else None
        try:
            while count is None or seen < count:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    break
                try:
                    item = await asyncio.wait_for(sink.get(), wait)
                except TimeoutError:
                    break
                seen += 1
                out = json.dumps(describe_event(item.target, item.event), sort_keys=True) \
                    if as_json else _line(item, online)
                sys.stdout.write(out + "\n")
                sys.stdout.flush()
                host.save_cursor(item.target, item.event.cursor)  # seen only once printed
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return seen

    run_host(work)


def status(text: Annotated[str, typer.Argument(help="Status text (e.g. what you play).")] = "",
           state: Annotated[str, typer.Option("--state", help="online, away, busy or offline.")
                            ] = "online",
           no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """Set presence and status text on every connected target."""
    if state not in ("online", "away", "busy", "offline"):
        raise ConfigError("--state must be online, away, busy or offline")
    prompter = make_prompter(no_input=no_input)

    async def work(host: Host) -> dict[str, Any]:
        async def put(conn: Connection) -> bool:
            await conn.plugin.set_presence(state, text)  # type: ignore[arg-type]
            return True

        return await host.each_target(None, prompter, put)

    results = run_host(work)
    _fail_all(results)
    ok = [k for k, v in results.items() if v is True]
    failed = {k: v.message for k, v in results.items() if isinstance(v, InterappError)}
    line = f"{state}{' — ' + text if text else ''} on {', '.join(ok) or 'no target'}"
    if failed:
        line += "; not on " + ", ".join(f"{k} ({m})" for k, m in failed.items())
    emit({"state": state, "status_text": text, "targets": ok, "errors": failed}, line,
         as_json=as_json)


def register(root: typer.Typer) -> None:
    """Attach the chat commands."""
    root.command("contacts")(contacts)
    root.command("send")(send)
    root.command("history")(history)
    root.command("watch")(watch)
    root.command("status")(status)
