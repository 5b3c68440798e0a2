"""The agent's routes for "one person, many networks": persons, merges, the merged contacts.

Each route is a thin call into the agent's :class:`~interapp.host.Host` (``people``,
``merge_people``, ``split_person``, ``suggest_people``, ``contacts``, ``send_to_person``,
``person_history``). Merges are kept in the host's local store and never sent to a server;
only the routes that need buddy lists, messages or history ask the targets. Errors are the
API's usual ``{"error", "message"}`` (``unknown_person``/``unknown_account``/``not_found`` →
404, ``account_in_person`` and other bad input → 400).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import FastAPI, Path, Query
from pydantic import BaseModel, Field

from interapp.agent.models import MessageOut, Strict
from interapp.host import InterappError, Person

if TYPE_CHECKING:
    from interapp.agent.core import Agent

State = Literal["online", "away", "busy", "offline"]
PersonPath = Annotated[str, Path(min_length=1, max_length=300,
                                 description="A person's id, name or one of its accounts")]
AccountText = Annotated[str, Field(min_length=3, max_length=330, pattern=r"^[^:]+:.+$",
                                   description="TARGET:USER, e.g. chatter:bob")]


class AccountOut(BaseModel):
    target: str
    user: str


class AccountIn(Strict):
    target: str = Field(min_length=1, max_length=64)
    user: str = Field(min_length=1, max_length=256)


class PersonOut(BaseModel):
    id: str
    name: str
    accounts: list[AccountOut]


class ProblemOut(BaseModel):
    error: str
    message: str
    target: str | None = None


class SuggestionOut(BaseModel):
    name: str
    accounts: list[AccountOut]
    reason: str = Field(description="same display name, or same user name")
    person_id: str | None = Field(description="Set when some of the accounts already are "
                                              "this person: the others could join it.")


class PeopleOut(BaseModel):
    people: list[PersonOut]
    suggestions: list[SuggestionOut] = Field(description="Never merged until you merge them.")
    problems: dict[str, ProblemOut] = Field(description="Targets that could not be asked "
                                                        "for the suggestions.")


class MergeIn(Strict):
    accounts: list[AccountText | AccountIn] = Field(min_length=1, max_length=32)
    name: str | None = Field(default=None, min_length=1, max_length=128)
    verify: bool = Field(default=True, description="Check that each account is a buddy "
                                                   "(asks the target if it was not listed).")


class SplitIn(Strict):
    person: str | None = Field(default=None, min_length=1, max_length=300,
                               description="Dissolve this person (id or name).")
    accounts: list[AccountText | AccountIn] = Field(default_factory=list, max_length=32,
                                                    description="Take these out of their "
                                                                "persons.")


class SplitOut(BaseModel):
    freed: list[AccountOut]
    people: list[PersonOut]


class RenameIn(Strict):
    name: str = Field(min_length=1, max_length=128)


class ContactAccountOut(BaseModel):
    target: str
    user: str
    display_name: str
    presence: State
    status_text: str
    last_active: str | None
    buddy: bool


class ContactOut(BaseModel):
    name: str
    person_id: str | None
    presence: State = Field(description="The best across the accounts.")
    status_text: str
    target: str = Field(description="The account the presence comes from.")
    user: str
    accounts: list[ContactAccountOut]


class ContactsOut(BaseModel):
    contacts: list[ContactOut]
    problems: dict[str, ProblemOut]


class PersonMessageIn(Strict):
    body: str = Field(min_length=1, max_length=8000)
    target: str | None = Field(default=None, min_length=1, max_length=64,
                               description="Default: where the person was last active.")
    client_msg_id: str | None = Field(default=None, min_length=1, max_length=128,
                                      pattern=r"^[A-Za-z0-9._:-]+$")


class PersonHistoryOut(BaseModel):
    person: PersonOut
    messages: list[MessageOut] = Field(description="Across the accounts, oldest first.")
    problems: dict[str, ProblemOut]


def _problems(found: dict[str, InterappError]) -> dict[str, dict[str, Any]]:
    return {n: {"error": e.code, "message": e.message, "target": n} for n, e in found.items()}


def _accounts(items: list[str | AccountIn]) -> list[str | tuple[str, str]]:
    return [(a.target, a.user) if isinstance(a, AccountIn) else a for a in items]


def include(app: FastAPI, agent: Agent, responses: dict[int | str, dict[str, Any]]) -> None:
    """Add the persons routes to the agent's application."""
    host = agent.host
    prefix = "/agent/v1"

    @app.get(f"{prefix}/people", response_model=PeopleOut, responses=responses)
    async def people(suggest: Annotated[bool, Query(
            description="Also suggest merges (reads the buddy lists)")] = True,
                     person: Annotated[str | None, Query(
            min_length=1, max_length=300,
            description="Only this person (id, name or one of its accounts); 404 if none")
                     ] = None) -> dict[str, Any]:
        """The signed-in user's persons (kept locally, never sent to a server) and
        suggested merges from matching display names or user names."""
        chosen = [await host.person(person)] if person is not None else await host.people()
        found = [p.to_dict() for p in chosen]
        suggestions: list[dict[str, Any]] = []
        problems: dict[str, InterappError] = {}
        if suggest:
            found_suggestions = await host.suggest_people()
            suggestions = [s.to_dict() for s in found_suggestions]
            problems = found_suggestions.problems
        return {"people": found, "suggestions": suggestions, "problems": _problems(problems)}

    @app.post(f"{prefix}/people/merge", response_model=PersonOut, responses=responses)
    async def merge(body: MergeIn) -> dict[str, Any]:
        """Merge accounts into one person (or add them to the one person some of them
        already are); stored locally only."""
        person = await host.merge_people(*_accounts(body.accounts), name=body.name,
                                         verify=body.verify)
        return person.to_dict()

    @app.post(f"{prefix}/people/split", response_model=SplitOut, responses=responses)
    async def split(body: SplitIn) -> dict[str, Any]:
        """Dissolve a person, or take accounts out of their persons (a person left with
        one account is dissolved); says which accounts are on their own again."""
        what: list[str | tuple[str, str]] = [body.person] if body.person else []
        what += _accounts(body.accounts)
        freed = await host.split_person(*what)
        return {"freed": [a.to_dict() for a in freed],
                "people": [p.to_dict() for p in await host.people()]}

    @app.patch(f"{prefix}/people/{{person}}", response_model=PersonOut, responses=responses)
    async def rename(person: PersonPath, body: RenameIn) -> dict[str, Any]:
        """Give a person another name."""
        return (await host.rename_person(person, body.name)).to_dict()

    @app.get(f"{prefix}/contacts", response_model=ContactsOut, responses=responses)
    async def contacts(merged: Annotated[bool, Query(
            description="One row per person (default), or one per buddy")] = True
                       ) -> dict[str, Any]:
        """The buddy list across the connected targets: one row per person with the best
        presence across their accounts, and one per buddy not merged with anyone."""
        found = await host.contacts(merged=merged)
        return {"contacts": [c.to_dict() for c in found], "problems": _problems(found.problems)}

    @app.post(f"{prefix}/people/{{person}}/messages", response_model=MessageOut,
              status_code=201, responses=responses)
    async def send(person: PersonPath, body: PersonMessageIn) -> dict[str, Any]:
        """Send to a person: on the network they were last active on, unless ``target``
        names one. The answer names the target used."""
        route = await host.person_route(person, body.target)
        await agent._ready(route.target)
        msg = await host.send(route.target, route.user, body.body,
                              client_msg_id=body.client_msg_id)
        return msg.to_dict()

    @app.get(f"{prefix}/people/{{person}}/history", response_model=PersonHistoryOut,
             responses=responses)
    async def history(person: PersonPath,
                      limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        """One conversation across all of a person's accounts, ordered by time."""
        found: Person = await host.person(person)
        for target in dict.fromkeys(a.target for a in found.accounts):
            with contextlib.suppress(InterappError):  # it shows in problems
                await agent._ready(target)
        messages = await host.person_history(found, limit=limit)
        return {"person": found.to_dict(), "messages": [m.to_dict() for m in messages],
                "problems": _problems(messages.problems)}
