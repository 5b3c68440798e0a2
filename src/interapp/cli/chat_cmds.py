"""Using the opposite applications from here: buddies, messages, live events, status."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Annotated, Any

import typer

from interapp.cli import rich_cmds as rich
from interapp.cli.common import NoInputOpt, make_prompter, run_host
from interapp.cli.hints import render
from interapp.cli.output import JSON_OPTION, emit
from interapp.host import (
    PRESENCE_STATES,
    ConfigError,
    Contacts,
    Host,
    InterappError,
    events,
    render_activity,
)

JsonOpt = Annotated[bool, JSON_OPTION]
ACTIONS = ("add", "accept", "remove")


def _fail_all(errors: dict[str, InterappError], total: int) -> None:
    if errors and len(errors) == total:
        name, first = next(iter(errors.items()))
        first.message = f"{name}: {first.message}"
        raise first


def _rows(found: list[Any]) -> list[dict[str, Any]]:
    return [{"target": b.target, "username": b.username, "display_name": b.display_name,
             "presence": str(b.presence), "status_text": b.status_text,
             "activity": None if b.activity is None else b.activity.to_json(),
             "activity_text": rich.activity_line(b.display_name, b.activity)} for b in found]


def _merged_lines(merged: Contacts,
                  notes: dict[tuple[str, str], str] | None = None) -> list[str]:
    """The table's rows with persons merged: one row per person (its best account's target
    and user, the person's name, the best presence), its other accounts after the status.
    ``notes``: (target, user) → a line to show under the row (one per account that has
    one; e.g. what the buddy is doing)."""
    lines = []
    for c in merged:
        others = [f"{a.target}:{a.user} {a.presence}" for a in c.accounts
                  if (a.target, a.user) != (c.target, c.user)]
        extra = f"  (+ {', '.join(others)})" if others else ""
        lines.append(f"{c.target:<12} {c.user:<16} {c.name:<20} {c.presence:<8} "
                     f"{c.status_text}{extra}".rstrip())
        for a in c.accounts:
            note = (notes or {}).get((a.target, a.user), "")
            if note:
                lines.append(f"{'':<12} {note}")
    return lines


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
            call = {"add": host.add_buddy, "accept": host.accept_buddy,
                    "remove": host.remove_buddy}[action]
            await call(name, user)

        run_host(act, prompter)
        done = {"add": "asked {u} to be your buddy on {n}",
                "accept": "{u} is now your buddy on {n}",
                "remove": "{u} removed from your buddies on {n}"}[action]
        emit({"target": name, "action": action, "username": user, "ok": True},
             done.format(u=user, n=name), as_json=as_json)
        return
    if len(args) > 1:
        raise ConfigError("usage: interapp contacts [NAME] | contacts add|accept|remove NAME USER")

    async def work(host: Host) -> tuple[list[dict[str, Any]], dict[str, InterappError], int,
                                        Contacts | None]:
        if args:
            found = await host.buddies(args[0])
            return _rows(found), {}, 1, None
        failed: dict[str, InterappError] = {}
        for t in host.targets():  # a one-shot command: each target once, via the prompt
            if t.state != "connected":
                try:
                    await host.connect(t.name)
                except InterappError as exc:
                    failed[t.name] = exc
        found = await host.buddies()
        persons = await host.people() if host.signed_in else []
        merged = Contacts.merge(found, persons)  # one row per person
        return _rows(found), {**found.problems, **failed}, len(host.targets()), merged

    rows, problems, total, merged = run_host(work, prompter)
    _fail_all(problems, total)
    lines = []
    for r in rows:
        lines.append(f"{r['target']:<12} {r['username']:<16} {r['display_name']:<20} "
                     f"{r['presence']:<8} {r['status_text']}")
        if r["activity_text"]:  # rich presence, on its own line under the buddy
            lines.append(f"{'':<12} {r['activity_text']}")
    if merged is not None:  # one row per person, each account's activity under it
        lines = _merged_lines(merged, {(r["target"], r["username"]): r["activity_text"]
                                       for r in rows if r["activity_text"]})
    lines += [f"{k}: not available ({render(exc)})" for k, exc in problems.items()]
    header = f"{'TARGET':<12} {'USERNAME':<16} {'DISPLAY NAME':<20} {'PRESENCE':<8} STATUS"
    data: dict[str, Any] = {"contacts": rows,
                            "errors": {k: v.message for k, v in problems.items()}}
    if merged is not None:
        data["people"] = [c.to_dict() for c in merged]
    emit(data, "\n".join([header, *lines]), as_json=as_json)


def send(name: Annotated[str, typer.Argument(help="The target (or a person: send PERSON "
                                              "TEXT).")],
         user: Annotated[str, typer.Argument(help="The buddy (or the message, to a person).")],
         text: Annotated[str | None, typer.Argument(help="The message.")] = None,
         target: Annotated[str | None, typer.Option(
             "--target", help="To a person: send on this target (default: where they were "
             "last active).")] = None,
         no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """Send a message to a buddy on a target (send NAME USER TEXT), or to a person you
    merged (send PERSON TEXT): on the network they were last active on."""
    if text is None:
        from interapp.cli.people_cmds import send_to_person

        sent = send_to_person(name, user, target, no_input=no_input)
        emit(sent, f"sent to {name} as {sent['to']} on {sent['target']} "
                   f"({sent['message_id']})", as_json=as_json)
        return
    if target is not None:
        raise ConfigError("--target is for a person (send PERSON TEXT --target NAME)")
    if not text.strip():
        raise ConfigError("the message is empty")

    async def work(host: Host) -> dict[str, Any]:
        msg = await host.send(name, user, text)
        return {"target": name, "message_id": msg.id, "to": msg.recipient, "body": msg.body,
                "sent_at": msg.sent_at, "client_msg_id": msg.client_msg_id}

    info = run_host(work, make_prompter(no_input=no_input))
    emit(info, f"sent to {user} on {name} ({info['message_id']})", as_json=as_json)


def history(name: Annotated[str, typer.Argument(help="The target.")],
            user: Annotated[str, typer.Argument(help="The buddy.")],
            limit: Annotated[int, typer.Option("--limit", min=1, max=200,
                                               help="How many messages.")] = 20,
            no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """The conversation with a buddy, newest last."""

    async def work(host: Host) -> list[dict[str, Any]]:
        msgs = await host.history(name, user, limit=limit)
        return [{"id": m.id, "from": m.sender, "to": m.recipient, "body": m.body,
                 "sent_at": m.sent_at} for m in msgs]

    rows = run_host(work, make_prompter(no_input=no_input))
    lines = [f"{m['sent_at']}  {m['from']}: {m['body']}" for m in rows]
    emit({"target": name, "with": user, "messages": rows},
         "\n".join(lines) or f"no messages with {user} on {name}", as_json=as_json)


def _line(event: events.Event) -> str | None:
    t = event.target
    rich_line = rich.event_line(event)
    if rich_line is not None:
        return rich_line
    match event:
        case events.MessageReceived(message=m):
            return f"[{t}] {m.sender} → {m.recipient}: {m.body}"
        case events.BuddyPresence(username=u, state=state, status_text=text, previous=before):
            extra = f" ({text})" if text else ""
            if before == "offline" and state != "offline":
                return f"[{t}] {u} came online{extra}"
            return f"[{t}] {u} is {state}{extra}"
        case events.ContactRequest(username=u):
            return f"[{t}] {u} asks to be your buddy (interapp contacts accept {t} {u})"
        case events.ContactAdded(username=u):
            return f"[{t}] {u} is now your buddy"
        case events.ContactRemoved(username=u):
            return f"[{t}] {u} is no longer your buddy"
        case events.CursorReset():
            return (f"[{t}] warning: {t} no longer knew where this app left off (its data may "
                    f"have been reset); events in between may be missing")
        case events.TargetDegraded(reason=why, retry_in=wait):
            return f"[{t}] connection lost ({why}); trying again in {wait:.0f} s"
        case events.LinkNeedsReauth(reason=why):
            return f"[{t}] the link needs you to sign in again ({why}): interapp connect {t}"
        case events.OtherEvent(type=kind):
            return f"[{t}] {kind}"
    return None  # came_online (shown as presence), target_connected


def _json_line(event: events.Event) -> str | None:
    if isinstance(event, events.BuddyCameOnline):
        return None  # the same target event is printed once, as its presence
    raw = getattr(event, "raw", None)
    if raw:  # what the target sent, as before: target, type, cursor and its fields
        out = {"target": event.target, "type": raw.get("type", event.kind),
               "cursor": getattr(event, "cursor", None),
               **{k: v for k, v in raw.items() if k not in ("seq", "type")}}
        return json.dumps(out, sort_keys=True, default=str)
    if isinstance(event, events.TargetDegraded | events.LinkNeedsReauth | events.EventsDropped):
        return json.dumps({"target": event.target, **event.to_dict()}, sort_keys=True)
    return None


def watch(name: Annotated[str | None, typer.Argument(help="One target (default: all).")] = None,
          count: Annotated[int | None, typer.Option("--count", min=1,
                                                    help="Stop after N events.")] = None,
          timeout: Annotated[float | None, typer.Option("--timeout", min=0.1,
                                                        help="Stop after S seconds.")] = None,
          no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """Live events across targets, one per line: messages and buddies coming online."""

    async def work(host: Host) -> int:
        names = [name] if name else [t.name for t in host.targets()]
        if not names:
            raise ConfigError("no targets configured")
        for n in names:  # connect first, so that a failure is reported at once
            await host.connect(n)
        seen = 0
        deadline = time.monotonic() + timeout if timeout else None
        async with host.events() as stream:
            while count is None or seen < count:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    break
                try:
                    event = await asyncio.wait_for(anext(stream), wait)
                except (TimeoutError, StopAsyncIteration):
                    break
                if name and event.target not in (name, "*"):
                    continue
                out = _json_line(event) if as_json else _line(event)
                if out is None:
                    continue
                seen += 1
                sys.stdout.write(out + "\n")
                sys.stdout.flush()
        return seen

    run_host(work, make_prompter(no_input=no_input))


def status(text: Annotated[str, typer.Argument(help="Status text (e.g. what you play).")] = "",
           state: Annotated[str | None, typer.Option(
               "--state", help=f"{', '.join(PRESENCE_STATES)} (default online).")] = None,
           activity_name: rich.ActivityNameOpt = None, details: rich.DetailsOpt = None,
           activity_state: rich.ActivityStateOpt = None, party: rich.PartyOpt = None,
           party_id: rich.PartyIdOpt = None, join_url: rich.JoinUrlOpt = None,
           started_at: rich.StartedOpt = None, clear_activity: rich.ClearOpt = False,
           no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """Set presence and status text on every connected target; with --activity-name,
    --details, --party … (rich presence) the activity, or --clear-activity to clear it."""
    if state is not None and state not in PRESENCE_STATES:
        raise ConfigError(f"--state must be {', '.join(PRESENCE_STATES[:-1])} or "
                          f"{PRESENCE_STATES[-1]}")
    activity = rich.build_activity(activity_name, details, activity_state, party, party_id,
                                   join_url, started_at)
    if activity is not None and clear_activity:
        raise ConfigError("--clear-activity cannot be given with an activity")
    with_activity = activity is not None or clear_activity
    with_presence = not with_activity or state is not None or bool(text)
    presence = state or "online"

    async def work(host: Host) -> tuple[Any, Any, int]:
        names = [t.name for t in host.targets()]
        result = await host.set_presence(presence, text, targets=names) \
            if with_presence else None
        shown = await host.set_activity(activity, targets=names) if with_activity else None
        return result, shown, len(names)

    result, shown, total = run_host(work, make_prompter(no_input=no_input))
    out: dict[str, Any] = {}
    parts: list[str] = []
    if result is not None:
        ok, failed = list(result.targets), dict(result.errors)
        _fail_all(dict(result.problems), total)
        line = f"{presence}{' — ' + text if text else ''} on {', '.join(ok) or 'no target'}"
        if failed:
            line += "; not on " + ", ".join(f"{k} ({m})" for k, m in failed.items())
        parts.append(line)
        out = {"state": presence, "status_text": text, "targets": ok, "errors": failed}
    if shown is not None:
        if result is None:
            _fail_all(dict(shown.problems), len(shown.carried) + len(shown.problems))
        how = ", ".join(f"{k} ({v})" for k, v in shown.carried.items()) or "no target"
        what = render_activity(activity) if activity else "activity cleared"
        line = f"{what} on {how}"
        if shown.errors:
            line += "; not on " + ", ".join(f"{k} ({m})" for k, m in shown.errors.items())
        parts.append(line)
        out["activity"] = shown.to_dict()
    emit(out, "; ".join(parts), as_json=as_json)


def register(root: typer.Typer) -> None:
    """Attach the chat commands."""
    root.command("contacts")(contacts)
    root.command("send")(send)
    root.command("history")(history)
    root.command("watch")(watch)
    root.command("status")(status)
    rich.register(root)
