"""``interapp people``: one person, many networks — merge accounts, split them, list persons
and suggestions, talk to a person. Merges are kept in the data folder only (beside the vault)
and never sent to any server."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from interapp.cli.common import NoInputOpt, make_prompter, run_host
from interapp.cli.hints import render
from interapp.cli.output import JSON_OPTION, emit
from interapp.host import ConfigError, Host, Person, PersonSuggestion, UnknownPerson

JsonOpt = Annotated[bool, JSON_OPTION]
people_app = typer.Typer(help="One person across networks. Without a command: your persons "
                              "and suggested merges. Merges are kept locally, never sent to a "
                              "server.")


def _accounts(p: Person | PersonSuggestion) -> str:
    return ", ".join(str(a) for a in p.accounts)


@people_app.callback(invoke_without_command=True)
def people(ctx: typer.Context,
           no_suggest: Annotated[bool, typer.Option(
               "--no-suggest", help="Do not read the buddy lists for suggestions.")] = False,
           no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """List the persons you merged, and suggested merges (same display name or user name)."""
    if ctx.invoked_subcommand is not None:
        return

    async def work(host: Host) -> tuple[list[Person], list[PersonSuggestion], dict[str, Any]]:
        found = await host.people()
        if no_suggest:
            return found, [], {}
        suggested = await host.suggest_people()
        return found, list(suggested), dict(suggested.problems)

    found, suggested, problems = run_host(work, make_prompter(no_input=no_input))
    lines = [f"{p.name:<20} {_accounts(p)}   ({p.id})" for p in found] or ["no persons yet"]
    if suggested:
        lines += ["", "suggested (interapp people merge … to merge; nothing is merged for you):"]
        lines += [f"  {s.name:<18} {_accounts(s)}   ({s.reason}"
                  f"{'; joins ' + s.person_id if s.person_id else ''})" for s in suggested]
    lines += [f"{k}: not available ({render(exc)})" for k, exc in problems.items()]
    emit({"people": [p.to_dict() for p in found],
          "suggestions": [s.to_dict() for s in suggested],
          "errors": {k: v.message for k, v in problems.items()}}, "\n".join(lines),
         as_json=as_json)


@people_app.command("merge")
def merge(accounts: Annotated[list[str], typer.Argument(
              help="TARGET:USER accounts, e.g. chatter:bob xmpp:bob@example.org.")],
          name: Annotated[str | None, typer.Option(
              "--name", help="The person's name (default: the first account's display "
              "name).")] = None,
          no_check: Annotated[bool, typer.Option(
              "--no-check", help="Do not check that each account is a buddy (no target is "
              "asked).")] = False,
          no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """Merge accounts on several targets into one person (or add them to one)."""

    async def work(host: Host) -> Person:
        return await host.merge_people(*accounts, name=name, verify=not no_check)

    person = run_host(work, make_prompter(no_input=no_input))
    emit(person.to_dict(), f"{person.name} is {_accounts(person)} ({person.id})",
         as_json=as_json)


@people_app.command("split")
def split(what: Annotated[list[str], typer.Argument(
              help="A person (name or id) to dissolve, or TARGET:USER accounts to take out "
              "of their person.")],
          as_json: JsonOpt = False) -> None:
    """Undo a merge: dissolve a person, or take accounts out of theirs."""

    async def work(host: Host) -> tuple[list[Any], list[Person]]:
        freed = await host.split_person(*what)
        return freed, await host.people()

    freed, left = run_host(work)
    emit({"freed": [a.to_dict() for a in freed], "people": [p.to_dict() for p in left]},
         f"on their own again: {', '.join(str(a) for a in freed) or 'nothing'}",
         as_json=as_json)


@people_app.command("rename")
def rename(person: Annotated[str, typer.Argument(help="The person (name, id or account).")],
           name: Annotated[str, typer.Argument(help="The new name.")],
           as_json: JsonOpt = False) -> None:
    """Give a person another name."""

    async def work(host: Host) -> Person:
        return await host.rename_person(person, name)

    done = run_host(work)
    emit(done.to_dict(), f"{done.name} is {_accounts(done)}", as_json=as_json)


@people_app.command("send")
def send(person: Annotated[str, typer.Argument(help="The person (name, id or account).")],
         text: Annotated[str, typer.Argument(help="The message.")],
         target: Annotated[str | None, typer.Option(
             "--target", help="Send on this target (default: where they were last "
             "active).")] = None,
         no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """Send to a person, on the network they were last active on."""
    info = send_to_person(person, text, target, no_input=no_input)
    emit(info, f"sent to {person} as {info['to']} on {info['target']} ({info['message_id']})",
         as_json=as_json)


def send_to_person(person: str, text: str, target: str | None, *,
                   no_input: bool) -> dict[str, Any]:
    """Send ``text`` to a person; the JSON row ``interapp send`` prints."""
    if not text.strip():
        raise ConfigError("the message is empty")

    async def work(host: Host) -> dict[str, Any]:
        try:
            msg = await host.send_to_person(person, text, target)
        except UnknownPerson:
            if any(t.name == person for t in host.targets()):  # send TARGET USER, no text
                raise ConfigError(f"no message given: interapp send {person} USER TEXT (or "
                                  "interapp send PERSON TEXT to a person)") from None
            raise
        return {"target": msg.target, "message_id": msg.id, "to": msg.recipient,
                "body": msg.body, "sent_at": msg.sent_at, "client_msg_id": msg.client_msg_id,
                "person": person}

    return run_host(work, make_prompter(no_input=no_input))


@people_app.command("history")
def history(person: Annotated[str, typer.Argument(help="The person (name, id or account).")],
            limit: Annotated[int, typer.Option("--limit", min=1, max=200,
                                               help="How many messages.")] = 20,
            no_input: NoInputOpt = False, as_json: JsonOpt = False) -> None:
    """One conversation across all of a person's accounts, oldest first."""

    async def work(host: Host) -> tuple[Person, list[Any], dict[str, Any]]:
        found = await host.person(person)
        msgs = await host.person_history(found, limit=limit)
        return found, list(msgs), dict(msgs.problems)

    found, msgs, problems = run_host(work, make_prompter(no_input=no_input))
    rows = [{"target": m.target, "id": m.id, "from": m.sender, "to": m.recipient,
             "body": m.body, "sent_at": m.sent_at} for m in msgs]
    lines = [f"{r['sent_at']}  [{r['target']}] {r['from']}: {r['body']}" for r in rows]
    lines += [f"{k}: not available ({render(exc)})" for k, exc in problems.items()]
    emit({"person": found.to_dict(), "messages": rows,
          "errors": {k: v.message for k, v in problems.items()}},
         "\n".join(lines) or f"no messages with {found.name}", as_json=as_json)


def register(root: typer.Typer) -> None:
    """Attach ``interapp people``."""
    root.add_typer(people_app, name="people")
