"""The values of "one person, many networks": persons, suggestions, merged contacts.

A :class:`Person` is the local user's own merge of accounts on several targets (``chatter:bob``
and ``xmpp:bob@example.org``) into one human; it is kept on this machine only. All are frozen
dataclasses with ``to_dict()`` for JSON, like :mod:`interapp.host.model`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, NamedTuple

from interapp.errors import ConfigError, InterappError
from interapp.host.events import Event
from interapp.host.model import Buddies, Buddy, Message, _Plain
from interapp.presence import PRESENCE_STATES, PresenceState

__all__ = ["Contact", "ContactAccount", "Contacts", "PeopleChanged", "Person", "PersonAccount",
           "PersonHistory", "PersonSuggestion", "PersonSuggestions", "parse_account"]

MAX_USER = 256


class PersonAccount(NamedTuple):
    """One account of a person: a buddy ``user`` on ``target`` (unpacks as a pair)."""

    target: str
    user: str

    def __str__(self) -> str:
        return f"{self.target}:{self.user}"

    def to_dict(self) -> dict[str, str]:
        """JSON-ready data."""
        return {"target": self.target, "user": self.user}


def parse_account(value: str | tuple[str, str] | Mapping[str, str]) -> PersonAccount:
    """``"chatter:bob"``, ``("chatter", "bob")`` or ``{"target", "user"}`` as a
    :class:`PersonAccount` (the target is what comes before the first ``:``)."""
    if isinstance(value, Mapping):
        target, user = str(value.get("target", "")), str(value.get("user", ""))
    elif isinstance(value, tuple):
        target, user = (str(v) for v in value)
    else:
        target, sep, user = str(value).partition(":")
        if not sep:
            raise ConfigError(f"{value!r} is not an account: write TARGET:USER "
                              "(e.g. chatter:bob or xmpp:bob@example.org)")
    target, user = target.strip(), user.strip()
    if not target or not user:
        raise ConfigError(f"{value!r} is not an account: write TARGET:USER")
    if len(user) > MAX_USER or len(target) > 64:
        raise ConfigError("an account's target or user name is too long")
    return PersonAccount(target, user)


@dataclass(frozen=True)
class Person(_Plain):
    """One human the user knows under several accounts (``accounts``: (target, user) pairs,
    in the order they were merged)."""

    id: str
    name: str
    accounts: tuple[PersonAccount, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {"id": self.id, "name": self.name,
                "accounts": [a.to_dict() for a in self.accounts]}


@dataclass(frozen=True)
class PersonSuggestion(_Plain):
    """Accounts that look like one human (``reason``: ``same display name`` or ``same user
    name``); ``person_id`` when some of them already are a person the others could join.
    Only a suggestion: nothing is merged until the user says so."""

    name: str
    accounts: tuple[PersonAccount, ...]
    reason: str
    person_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {"name": self.name, "accounts": [a.to_dict() for a in self.accounts],
                "reason": self.reason, "person_id": self.person_id}


@dataclass(frozen=True)
class ContactAccount(_Plain):
    """One account behind a contact row, with its own presence; ``buddy`` is False when the
    target did not list it (not a buddy any more, or the target could not be asked)."""

    target: str
    user: str
    display_name: str
    presence: PresenceState = PresenceState.OFFLINE
    status_text: str = ""
    last_active: datetime | None = None
    buddy: bool = True


def rank(state: PresenceState) -> int:
    """0 for the most available state (online) … 3 for offline."""
    return PRESENCE_STATES.index(state)


@dataclass(frozen=True)
class Contact(_Plain):
    """One row of the merged buddy list: a person (``person_id``) or a buddy not merged with
    anyone (``person_id`` None). ``presence`` is the best across ``accounts``; ``target`` and
    ``user`` name the account it comes from."""

    name: str
    person_id: str | None
    presence: PresenceState
    status_text: str
    target: str
    user: str
    accounts: tuple[ContactAccount, ...]


class Contacts(list[Contact]):
    """The merged buddy list (a list), with ``problems``: the targets that could not be
    asked, and why."""

    problems: dict[str, InterappError]

    def __init__(self, rows: Iterable[Contact] = (),
                 problems: Mapping[str, InterappError] | None = None) -> None:
        super().__init__(rows)
        self.problems = dict(problems or {})

    @classmethod
    def merge(cls, buddies: Buddies | list[Buddy], people: Iterable[Person],
              last_active: Mapping[PersonAccount, datetime] | None = None) -> Contacts:
        """The merged rows from a buddy list and the persons (no target is asked): one row
        per person, its presence the best of its accounts (ties: the one active last, then
        the first merged); one row per buddy in no person. Best presence first, then by
        name. ``problems`` are the buddy list's."""
        active = last_active or {}
        listed = {PersonAccount(b.target, b.username): b for b in buddies}
        used: set[PersonAccount] = set()
        rows: list[Contact] = []
        for p in people:
            accs: list[ContactAccount] = []
            for acc in p.accounts:
                used.add(acc)
                b = listed.get(acc)
                accs.append(ContactAccount(
                    acc.target, acc.user, b.display_name if b else acc.user,
                    b.presence if b else PresenceState.OFFLINE, b.status_text if b else "",
                    active.get(acc), b is not None))
            if not accs:
                continue
            best = min(enumerate(accs), key=lambda ic: (
                rank(ic[1].presence), -_stamp(ic[1].last_active), ic[0]))[1]
            rows.append(Contact(p.name, p.id, best.presence, best.status_text, best.target,
                                best.user, tuple(accs)))
        for b in buddies:
            acc = PersonAccount(b.target, b.username)
            if acc in used:
                continue
            one = ContactAccount(b.target, b.username, b.display_name, b.presence,
                                 b.status_text, active.get(acc), True)
            rows.append(Contact(b.display_name or b.username, None, b.presence, b.status_text,
                                b.target, b.username, (one,)))
        rows.sort(key=lambda c: (rank(c.presence), " ".join(c.name.split()).casefold(),
                                 c.target, c.user))
        return cls(rows, getattr(buddies, "problems", None))


def _stamp(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


class PersonHistory(list[Message]):
    """A person's conversations on all their accounts as one, oldest first (a list of
    :class:`~interapp.host.Message`, each naming its target), with ``problems``: the targets
    that could not be asked."""

    problems: dict[str, InterappError]

    def __init__(self, messages: Iterable[Message] = (),
                 problems: Mapping[str, InterappError] | None = None) -> None:
        super().__init__(messages)
        self.problems = dict(problems or {})


class PersonSuggestions(list[PersonSuggestion]):
    """Suggested merges (a list), with ``problems``: the targets whose buddy lists could not
    be read, so that nothing could be suggested from them."""

    problems: dict[str, InterappError]

    def __init__(self, found: Iterable[PersonSuggestion] = (),
                 problems: Mapping[str, InterappError] | None = None) -> None:
        super().__init__(found)
        self.problems = dict(problems or {})


@dataclass(frozen=True)
class PeopleChanged(Event):
    """The user's persons changed through this host (``action``: ``merged``, ``split`` or
    ``renamed``; ``person_id`` when one person is meant; ``accounts``: the accounts
    concerned): reload ``people()``/``contacts()``. ``target`` is ``"*"``."""

    kind: ClassVar[str] = "people_changed"
    action: str
    person_id: str | None = None
    accounts: tuple[PersonAccount, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data with ``type``."""
        return {"type": self.kind, "target": self.target, "action": self.action,
                "person_id": self.person_id, "accounts": [a.to_dict() for a in self.accounts]}
