"""Rich presence and invites on the command line: the activity options of ``interapp
status``, the activity in ``interapp contacts`` and ``watch``, and ``interapp invite`` /
``interapp invites`` (list, accept, decline)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from interapp.cli.common import NoInputOpt, make_prompter, run_host
from interapp.cli.output import JSON_OPTION, emit
from interapp.host import (
    Activity,
    ConfigError,
    Host,
    InterappError,
    Invite,
    Join,
    Party,
    events,
    render_activity,
)
from interapp.presence import parse_iso_utc

JsonOpt = Annotated[bool, JSON_OPTION]
_PARTY = re.compile(r"^(\d{1,4})(?:/(\d{1,4}))?$")

ActivityNameOpt = Annotated[str | None, typer.Option(
    "--activity-name", help="Rich presence: what you play (e.g. Arena).")]
DetailsOpt = Annotated[str | None, typer.Option(
    "--details", help="Rich presence: details (e.g. 'Ranked 2v2').")]
ActivityStateOpt = Annotated[str | None, typer.Option(
    "--activity-state", help="Rich presence: the activity's state (e.g. 'level 7'); --state "
                             "is the presence.")]
PartyOpt = Annotated[str | None, typer.Option(
    "--party", help="Rich presence: party size, SIZE or SIZE/MAX (e.g. 2/4).")]
PartyIdOpt = Annotated[str | None, typer.Option(
    "--party-id", help="Rich presence: the party's id (friends in the same party match).")]
JoinUrlOpt = Annotated[str | None, typer.Option(
    "--join-url", help="Where friends join you (http(s) or the game's own scheme).")]
StartedOpt = Annotated[str | None, typer.Option(
    "--started-at", help="When the activity started (ISO 8601 with offset; default: now).")]
ClearOpt = Annotated[bool, typer.Option(
    "--clear-activity", help="Clear the activity (rich presence) on every connected target.")]


def parse_party(value: str | None, party_id: str | None) -> Party | None:
    """``--party 2/4`` (and ``--party-id``) as a :class:`Party`."""
    if value is None:
        return Party(id=party_id) if party_id else None
    match = _PARTY.match(value.strip())
    if match is None:
        raise ConfigError("--party must be SIZE or SIZE/MAX, e.g. 2/4")
    size, most = int(match.group(1)), match.group(2)
    return Party(id=party_id, size=size, max=int(most) if most else None)


def build_activity(name: str | None, details: str | None, state: str | None,
                   party: str | None, party_id: str | None, join_url: str | None,
                   started_at: str | None) -> Activity | None:
    """The activity the ``status`` options describe (None when none is given)."""
    if all(v is None for v in (name, details, state, party, party_id, join_url, started_at)):
        return None
    started = parse_iso_utc(started_at, "--started-at") if started_at else datetime.now(UTC)
    return Activity(name=name, details=details, state=state,
                    party=parse_party(party, party_id), started_at=started,
                    join=Join(join_url) if join_url else None)


def activity_line(display: str, activity: Activity | None) -> str:
    """``"Bob — Arena · Ranked 2v2 · 2/4 · 12 min"`` (empty without an activity)."""
    text = render_activity(activity)
    return f"{display} — {text}" if text else ""


def invite_row(i: Invite) -> dict[str, Any]:
    """An invite as ``--json`` prints it."""
    return i.to_dict()


def invite_text(i: Invite) -> str:
    """One line for people."""
    what = render_activity(i.activity)
    parts = [f"{i.target:<12} {i.id}", f"{i.from_user} → {i.to_user}"]
    if what:
        parts.append(what)
    if i.url:
        parts.append(f"join: {i.url}")
    if i.message:
        parts.append(f"“{i.message}”")
    parts.append(f"until {i.expires_at.strftime('%H:%M:%S')} UTC")
    return "  ".join(parts)


def event_line(event: events.Event) -> str | None:
    """The ``watch`` line of a rich-presence event (None for any other)."""
    t = event.target
    match event:
        case events.BuddyActivity(username=u, activity=a, own=own):
            who = "you" if own else u
            if a is None:
                return f"[{t}] {who} cleared {'your' if own else 'their'} activity"
            return f"[{t}] {who}: {render_activity(a)}"
        case events.InviteReceived(invite=i):
            what = render_activity(i.activity) or "their game"
            url = f" — join: {i.url}" if i.url else ""
            note = f" “{i.message}”" if i.message else ""
            return (f"[{t}] {i.from_user} invites you to {what}{url}{note} "
                    f"(interapp invites accept {t} {i.id})")
        case events.InviteAnswered(invite=i):
            if i.outgoing:
                return f"[{t}] {i.to_user} {i.state} your invite"
            return f"[{t}] the invite from {i.from_user} is {i.state}"
    return None


def invite(name: Annotated[str, typer.Argument(help="The target.")],
           user: Annotated[str, typer.Argument(help="The buddy to invite.")],
           join_url: JoinUrlOpt = None,
           message: Annotated[str, typer.Option("--message", help="A note with it.")] = "",
           client_invite_id: Annotated[str | None, typer.Option(
               "--client-invite-id", help="Makes retries safe: the same id is one invite.")
           ] = None,
           no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """Invite a buddy to join you: your activity on that target, or --join-url."""

    async def work(host: Host) -> Invite:
        return await host.invite(name, user, join_url=join_url, message=message,
                                 client_invite_id=client_invite_id)

    sent = run_host(work, make_prompter(no_input=no_input))
    what = render_activity(sent.activity) or sent.url or "you"
    emit(invite_row(sent), f"invited {user} on {name} to {what} ({sent.id})", as_json=as_json)


INVITE_ACTIONS = ("accept", "decline")


def invites(args: Annotated[list[str] | None, typer.Argument(
                help="[NAME] to list one target's invites, or 'accept|decline NAME ID'.",
                metavar="[NAME] | accept|decline NAME ID")] = None,
            no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """The open invites, sent and received; or accept or decline one."""
    args = args or []
    prompter = make_prompter(no_input=no_input)
    if args and args[0] in INVITE_ACTIONS:
        if len(args) != 3:
            raise ConfigError(f"usage: interapp invites {args[0]} NAME ID")
        action, name, invite_id = args

        async def answer(host: Host) -> Invite:
            return await host.answer_invite(name, invite_id, action == "accept")

        done = run_host(answer, prompter)
        line = f"{done.state} the invite from {done.from_user} on {name}"
        if done.state == "accepted" and done.url:
            line += f": join at {done.url}"
        emit(invite_row(done), line, as_json=as_json)
        return
    if len(args) > 1:
        raise ConfigError("usage: interapp invites [NAME] | invites accept|decline NAME ID")

    async def work(host: Host) -> tuple[list[Invite], dict[str, InterappError]]:
        found = await host.invites(args[0] if args else None)
        return list(found), dict(found.problems)

    found, problems = run_host(work, prompter)
    lines = [invite_text(i) for i in found] or ["no open invites"]
    lines += [f"{k}: not available ({exc.message})" for k, exc in problems.items()]
    emit({"invites": [invite_row(i) for i in found],
          "errors": {k: v.message for k, v in problems.items()}}, "\n".join(lines),
         as_json=as_json)


def register(root: typer.Typer) -> None:
    """Attach ``invite`` and ``invites``."""
    root.command("invite")(invite)
    root.command("invites")(invites)
