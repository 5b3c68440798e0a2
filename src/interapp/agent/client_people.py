"""The persons part of :class:`~interapp.agent.client.RemoteHost`: the same methods as
:class:`~interapp.host.Host` (``people``, ``merge_people`` …), each one call to the agent's
``/agent/v1/people…`` and ``/agent/v1/contacts`` routes, handing back the same typed values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from interapp.host import (
    Contact,
    ContactAccount,
    Contacts,
    InterappError,
    Message,
    Person,
    PersonAccount,
    PersonHistory,
    PersonSuggestion,
    PersonSuggestions,
    PresenceState,
)

Ref = Person | str
AccountRef = str | tuple[str, str] | Mapping[str, str]


def _account(value: AccountRef) -> str | dict[str, str]:
    if isinstance(value, tuple):
        return {"target": value[0], "user": value[1]}
    if isinstance(value, Mapping):
        return {"target": str(value.get("target", "")), "user": str(value.get("user", ""))}
    return value


def person_from(d: dict[str, Any]) -> Person:
    """A :class:`Person` from the agent's JSON."""
    return Person(d["id"], d["name"], tuple(PersonAccount(a["target"], a["user"])
                                            for a in d["accounts"]))


def _ref(value: Ref) -> str:
    return quote(value.id if isinstance(value, Person) else value, safe="")


class RemotePeopleMixin:
    """``people``, ``merge_people``, ``split_person``, ``suggest_people``, ``contacts``,
    ``send_to_person``, ``person_history`` through the agent."""

    if TYPE_CHECKING:  # defined by RemoteHost
        async def call(self, method: str, path: str, body: Any = None,
                       params: dict[str, Any] | None = None) -> Any: ...

    def _errors(self, found: dict[str, Any]) -> dict[str, InterappError]:
        from interapp.agent.client import error_from

        out = {}
        for name, body in found.items():
            exc = error_from(body, 503)
            exc.target = name
            out[name] = exc
        return out

    async def people(self) -> list[Person]:
        """See :meth:`Host.people`."""
        d = await self.call("GET", "/people", params={"suggest": "false"})
        return [person_from(p) for p in d["people"]]

    async def person(self, ref: Ref) -> Person:
        """See :meth:`Host.person`."""
        key = ref.id if isinstance(ref, Person) else ref
        d = await self.call("GET", "/people", params={"suggest": "false", "person": key})
        return person_from(d["people"][0])

    async def suggest_people(self) -> PersonSuggestions:
        """See :meth:`Host.suggest_people`."""
        d = await self.call("GET", "/people")
        found = [PersonSuggestion(s["name"], tuple(PersonAccount(a["target"], a["user"])
                                                   for a in s["accounts"]),
                                  s["reason"], s.get("person_id")) for s in d["suggestions"]]
        return PersonSuggestions(found, self._errors(d["problems"]))

    async def merge_people(self, *accounts: AccountRef, name: str | None = None,
                           verify: bool = True) -> Person:
        """See :meth:`Host.merge_people`."""
        d = await self.call("POST", "/people/merge", {
            "accounts": [_account(a) for a in accounts], "name": name, "verify": verify})
        return person_from(d)

    async def rename_person(self, person: Ref, name: str) -> Person:
        """See :meth:`Host.rename_person`."""
        return person_from(await self.call("PATCH", f"/people/{_ref(person)}",
                                           {"name": name}))

    async def split_person(self, *what: Ref | tuple[str, str]) -> list[PersonAccount]:
        """See :meth:`Host.split_person` (one request per person named)."""
        accounts: list[str | dict[str, str]] = []
        freed: list[PersonAccount] = []
        persons: list[str] = []
        for ref in what:
            if isinstance(ref, tuple):
                accounts.append(_account(ref))
            elif isinstance(ref, Person):
                persons.append(ref.id)
            else:
                persons.append(ref)
        for name in persons:
            d = await self.call("POST", "/people/split", {"person": name})
            freed += [PersonAccount(a["target"], a["user"]) for a in d["freed"]]
        if accounts:
            d = await self.call("POST", "/people/split", {"accounts": accounts})
            freed += [PersonAccount(a["target"], a["user"]) for a in d["freed"]]
        return list(dict.fromkeys(freed))

    async def contacts(self, *, merged: bool = True) -> Contacts:
        """See :meth:`Host.contacts`."""
        d = await self.call("GET", "/contacts", params={"merged": str(merged).lower()})
        rows = [Contact(c["name"], c.get("person_id"), PresenceState(c["presence"]),
                        c["status_text"], c["target"], c["user"], tuple(
                            ContactAccount(a["target"], a["user"], a["display_name"],
                                           PresenceState(a["presence"]), a["status_text"],
                                           _when(a.get("last_active")), bool(a["buddy"]))
                            for a in c["accounts"])) for c in d["contacts"]]
        return Contacts(rows, self._errors(d["problems"]))

    async def send_to_person(self, person: Ref, body: str, target: str | None = None, *,
                             client_msg_id: str | None = None) -> Message:
        """See :meth:`Host.send_to_person`."""
        from interapp.agent.client import message

        return message(await self.call("POST", f"/people/{_ref(person)}/messages", {
            "body": body, "target": target, "client_msg_id": client_msg_id}))

    async def person_history(self, person: Ref, *, limit: int = 50) -> PersonHistory:
        """See :meth:`Host.person_history`."""
        from interapp.agent.client import message

        d = await self.call("GET", f"/people/{_ref(person)}/history", params={"limit": limit})
        return PersonHistory([message(m) for m in d["messages"]], self._errors(d["problems"]))


def _when(value: Any) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value) if isinstance(value, str) and value else None
