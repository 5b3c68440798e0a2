"""One person, many networks: the part of the host façade that merges accounts into persons.

Theory of operation
-------------------
:class:`PeopleMixin` is inherited by :class:`~interapp.host.Host`. A person is stored in the
vault's database (:mod:`interapp.vault.people`) for the signed-in local account and is never
sent anywhere: listing, merging, splitting and suggesting read and write only that store
(suggestions and contacts also read the buddy lists, as :meth:`Host.buddies` does).

Where a person was last active is learnt from the events the host's streams publish (the hub's
``observers``): a message from one of their accounts, or a presence change to a state other
than offline, on any buddy account. The host keeps the newest per account in memory and writes
it to the store a moment later (and when it closes) on the vault's thread, so a host opened
later — the command line while the agent ran — routes the same way. A message to a person
(:meth:`send_to_person`) goes to the account they were last active on, else the one whose
presence is best, else the first merged; unless a target is named.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from interapp.errors import ConfigError, InterappError, NotFoundError, UnknownAccount, UnknownPerson
from interapp.host import events as ev
from interapp.host._hub import Hub
from interapp.host.model import Buddy, Message
from interapp.host.persons import (
    Contacts,
    PeopleChanged,
    Person,
    PersonAccount,
    PersonHistory,
    PersonSuggestion,
    PersonSuggestions,
    parse_account,
    rank,
)
from interapp.presence import PresenceState
from interapp.vault.people import StoredPerson

if TYPE_CHECKING:
    from interapp.host._slot import Slot
    from interapp.host.config import HostConfig, LocalApp, Target
    from interapp.host.model import Buddies
    from interapp.vault.aio import AsyncVault

log = logging.getLogger("interapp.host")
FLUSH_DELAY = 0.5
AccountRef = str | tuple[str, str] | Mapping[str, str]
PersonRef = Person | str
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def when(value: str) -> datetime:
    """An ISO time (``Z`` too) as an aware UTC datetime; the epoch if it is not one."""
    try:
        found = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return _EPOCH
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def local_part(user: str) -> str:
    """``bob`` of ``bob``, ``bob@example.org`` and ``@bob:matrix.org``."""
    name = user[1:] if user.startswith("@") else user
    return name.split("@", 1)[0].split(":", 1)[0]


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def _person(stored: StoredPerson) -> Person:
    return Person(stored.id, stored.name, tuple(PersonAccount(*a) for a in stored.accounts))


class PeopleMixin:
    """Persons: ``people``, ``merge_people``, ``split_person``, ``suggest_people``,
    ``contacts``, ``send_to_person``, ``person_history`` (see the module docstring)."""

    _activity: dict[tuple[str, str, str, str], tuple[datetime, str]]
    _activity_dirty: set[tuple[str, str, str, str]]
    _activity_task: asyncio.Task[None] | None
    _display: dict[PersonAccount, str]

    if TYPE_CHECKING:  # what the mixin uses of Host (defined there)
        _vault: AsyncVault
        _hub: Hub
        _config: HostConfig
        _local: LocalApp | None
        _signed_in: str | None
        _targets: dict[str, Target]
        _slots: dict[str, Slot]

        def _require_local(self) -> LocalApp: ...
        def _require_signed_in(self) -> str: ...
        def _slot(self, name: str) -> Slot: ...
        async def buddies(self, target: str | None = None) -> Buddies: ...
        async def send(self, target: str, to: str, body: str, *,
                       client_msg_id: str | None = None) -> Message: ...
        async def history(self, target: str, user: str, *, limit: int = 50,
                          before: str | None = None) -> list[Message]: ...

    def _people_init(self) -> None:
        self._activity = {}
        self._activity_dirty = set()
        self._activity_task = None
        self._display = {}
        self._hub.observers.append(self._observe_activity)

    async def _people_close(self) -> None:
        task, self._activity_task = self._activity_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._flush_activity()

    # --- last activity ------------------------------------------------------------------------

    def _observe_activity(self, event: ev.Event) -> None:
        if isinstance(event, ev.MessageReceived) and not event.message.own:
            user, how = event.message.sender, "message"
            at = min(when(event.message.sent_at), datetime.now(UTC))
            if at == _EPOCH:
                at = datetime.now(UTC)
        elif isinstance(event, ev.BuddyPresence) and not event.own \
                and event.state is not PresenceState.OFFLINE:
            user, how, at = event.username, "presence", datetime.now(UTC)
        else:
            return
        if self._local is None or self._signed_in is None or not user:
            return
        key = (self._local.issuer, self._signed_in, event.target, user)
        before = self._activity.get(key)
        if before is not None and before[0] >= at:
            return
        self._activity[key] = (at, how)
        self._activity_dirty.add(key)
        if self._activity_task is None or self._activity_task.done():
            with contextlib.suppress(RuntimeError):  # no running loop: flushed at close
                self._activity_task = asyncio.get_running_loop().create_task(
                    self._later_flush(), name="interapp-activity")

    async def _later_flush(self) -> None:
        await asyncio.sleep(FLUSH_DELAY)
        await self._flush_activity()

    async def _flush_activity(self) -> None:
        while self._activity_dirty:
            batch = list(self._activity_dirty)
            self._activity_dirty.clear()
            by_owner: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {}
            for key in batch:
                at, how = self._activity[key]
                by_owner.setdefault(key[:2], []).append((key[2], key[3], at.isoformat(), how))
            for owner, rows in by_owner.items():
                try:
                    await self._vault.run(self._vault.sync.people.record_activity, owner, rows)
                except InterappError as exc:  # e.g. the vault closed under us: best effort
                    log.warning("could not save when buddies were last active: %s", exc.message)
                    return

    async def _last_active(self) -> dict[PersonAccount, datetime]:
        owner = self._owner()
        stored = await self._vault.run(self._vault.sync.people.activity, owner)
        found = {PersonAccount(*k): when(v[0]) for k, v in stored.items()}
        for (app, account, target, user), (at, _) in self._activity.items():
            acc = PersonAccount(target, user)
            if (app, account) == owner and at > found.get(acc, _EPOCH):
                found[acc] = at
        return found

    # --- the store ----------------------------------------------------------------------------

    def _owner(self) -> tuple[str, str]:
        local = self._require_local()
        return local.issuer, self._require_signed_in()

    async def _stored(self) -> list[StoredPerson]:
        return await self._vault.run(self._vault.sync.people.list, self._owner())

    async def people(self) -> list[Person]:
        """The signed-in user's persons, by name. Read from the local store only: no target
        is asked."""
        found = [_person(p) for p in await self._stored()]
        return sorted(found, key=lambda p: (_fold(p.name), p.id))

    async def person(self, ref: PersonRef) -> Person:
        """One person by id, name (case aside) or one of its accounts (``chatter:bob``)."""
        return _person(self._find(await self._stored(), ref))

    @staticmethod
    def _find(stored: list[StoredPerson], ref: PersonRef) -> StoredPerson:
        key = ref.id if isinstance(ref, Person) else str(ref).strip()
        for p in stored:
            if p.id == key:
                return p
        named = [p for p in stored if _fold(p.name) == _fold(key)]
        if len(named) == 1:
            return named[0]
        with contextlib.suppress(ConfigError):
            acc = parse_account(key)
            for p in stored:
                if acc in p.accounts:
                    return p
        known = ", ".join(sorted(p.name for p in stored)) or "none yet"
        raise UnknownPerson(f"no person {key[:80]!r} (persons: {known})")

    async def _check_accounts(self, accounts: list[PersonAccount], verify: bool) -> None:
        self._targets = await self._vault.run(self._config.targets)
        for acc in accounts:
            if acc.target not in self._targets:
                known = ", ".join(sorted(self._targets)) or "none yet"
                error = NotFoundError(f"no target {acc.target!r} (configured: {known})")
                error.target = acc.target
                raise error
        if not verify:
            return
        for target in dict.fromkeys(a.target for a in accounts):
            users = [a.user for a in accounts if a.target == target]
            slot = self._slot(target)
            if all(u in slot.seen for u in users):
                continue
            listed = await self.buddies(target)
            self._remember(listed)
            names = {b.username for b in listed}
            for user in users:
                if user not in names:
                    shown = ", ".join(sorted(names)[:10]) or "none"
                    error = UnknownAccount(f"{user!r} is not a buddy on {target} (its buddies: "
                                           f"{shown})")
                    error.target = target
                    raise error

    def _remember(self, buddies: list[Buddy]) -> None:
        for b in buddies:
            if b.display_name:
                self._display[PersonAccount(b.target, b.username)] = b.display_name

    async def merge_people(self, *accounts: AccountRef, name: str | None = None,
                           verify: bool = True) -> Person:
        """Merge accounts (``"chatter:bob"``, ``("xmpp", "bob@example.org")``) into one
        person, named ``name`` (default: the first account's display name). Accounts of one
        existing person may be given: the others join it (and ``name`` renames it).

        Each target must be configured (NotFoundError) and, with ``verify``, each user one
        of its buddies (UnknownAccount; the buddy list the host saw last, else the target is
        asked). An account of another person raises AccountInPerson. The merge is stored
        locally only, never sent to a server.
        """
        parsed = [parse_account(a) for a in accounts]
        if not parsed:
            raise ConfigError("name the accounts to merge (TARGET:USER …)")
        owner = self._owner()
        await self._check_accounts(parsed, verify)
        first = parsed[0]
        default = self._display.get(first) or local_part(first.user) or first.user
        stored = await self._vault.run(self._merge_sync, owner, parsed, name, default)
        person = _person(stored)
        self._hub.publish(PeopleChanged("*", "merged", person.id, person.accounts))
        return person

    def _merge_sync(self, owner: tuple[str, str], accounts: list[PersonAccount],
                    name: str | None, default: str) -> StoredPerson:
        pairs = [(a.target, a.user) for a in accounts]
        return self._vault.sync.people.merge(owner, pairs, name=name, default_name=default)

    async def rename_person(self, person: PersonRef, name: str) -> Person:
        """Give a person another name (unique among the user's persons)."""
        found = self._find(await self._stored(), person)
        stored = await self._vault.run(self._vault.sync.people.rename, self._owner(),
                                       found.id, name)
        person = _person(stored)
        self._hub.publish(PeopleChanged("*", "renamed", person.id, person.accounts))
        return person

    async def split_person(self, *what: PersonRef | tuple[str, str]
                           ) -> list[PersonAccount]:
        """Undo merges: a person (id, name or :class:`Person`) is dissolved; an account
        (``"chatter:bob"``) leaves its person (a person left with one account is dissolved).
        Returns the accounts that are on their own again. UnknownPerson, and nothing
        changed, when one is neither."""
        if not what:
            raise ConfigError("name the person or the accounts to split")
        owner = self._owner()
        stored = await self._stored()
        ids: list[str] = []
        accounts: list[tuple[str, str]] = []
        for ref in what:
            if isinstance(ref, tuple):
                accounts.append((parse_account(ref).target, parse_account(ref).user))
                continue
            key = ref.id if isinstance(ref, Person) else str(ref).strip()
            acc: PersonAccount | None = None
            with contextlib.suppress(ConfigError):
                acc = parse_account(key)
            if any(p.id == key for p in stored) or acc is None or \
                    not any(acc in p.accounts for p in stored):
                try:
                    ids.append(self._find(stored, ref).id)
                except UnknownPerson as exc:
                    if acc is not None:
                        exc.message = f"{exc.message}; nor is {acc} part of any person"
                        exc.args = (exc.message,)
                    raise
            else:
                accounts.append((acc.target, acc.user))
        freed = [PersonAccount(*a) for a in
                 await self._vault.run(self._split_sync, owner, ids, accounts)]
        self._hub.publish(PeopleChanged("*", "split", ids[0] if len(ids) == 1 else None,
                                        tuple(freed)))
        return freed

    def _split_sync(self, owner: tuple[str, str], ids: list[str],
                    accounts: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return self._vault.sync.people.split(owner, person_ids=ids, accounts=accounts)

    # --- suggestions and the merged buddy list --------------------------------------------------

    async def suggest_people(self) -> PersonSuggestions:
        """Accounts on different targets that look like one human: the same display name, or
        the same user name (``bob`` and ``bob@example.org``). Reads the buddy lists of the
        connected targets (as :meth:`buddies` does); never merges anything."""
        found = await self.buddies()
        self._remember(found)
        stored = await self._stored()
        owner_of = {a: p for p in stored for a in p.accounts}
        groups: dict[tuple[str, str], list[Buddy]] = {}
        for b in found:
            if b.display_name.strip():
                groups.setdefault(("same display name", _fold(b.display_name)), []).append(b)
            if local_part(b.username):
                groups.setdefault(("same user name", local_part(b.username).casefold()),
                                  []).append(b)
        out: dict[frozenset[PersonAccount], PersonSuggestion] = {}
        for (reason, _), members in groups.items():
            accs = tuple(dict.fromkeys(PersonAccount(b.target, b.username) for b in members))
            if len({a.target for a in accs}) < 2 or frozenset(accs) in out:
                continue
            persons = {owner_of[a].id: owner_of[a] for a in accs if a in owner_of}
            if len(persons) > 1:
                continue  # the user keeps these apart
            person = next(iter(persons.values()), None)
            if person is not None and all(a in person.accounts for a in accs):
                continue  # already merged
            name = person.name if person else (members[0].display_name or
                                               local_part(members[0].username))
            out[frozenset(accs)] = PersonSuggestion(name, accs, reason,
                                                    person.id if person else None)
        return PersonSuggestions(sorted(out.values(), key=lambda s: (_fold(s.name), s.reason)),
                                 found.problems)

    async def contacts(self, *, merged: bool = True) -> Contacts:
        """The merged buddy list: one row per person, with the best presence across their
        accounts, and one row per buddy not merged with anyone; every row carries each
        account's own presence. ``problems``: the targets that could not be asked.
        ``merged=False``: one row per buddy, persons aside."""
        found = await self.buddies()
        self._remember(found)
        stored = [_person(p) for p in await self._stored()] if merged else []
        return Contacts.merge(found, stored, await self._last_active())

    # --- talking to a person ----------------------------------------------------------------------

    async def person_route(self, person: PersonRef, target: str | None = None
                           ) -> PersonAccount:
        """The account a message to ``person`` would go to: on ``target`` if one is named,
        else where they were last active, else where their presence is best, else the first
        account merged."""
        found = self._find(await self._stored(), person)
        accounts = [PersonAccount(*a) for a in found.accounts]
        if target is not None:
            accounts = [a for a in accounts if a.target == target]
            if not accounts:
                have = ", ".join(f"{t}:{u}" for t, u in found.accounts)
                error = UnknownAccount(f"{found.name} has no account on {target} (accounts: "
                                       f"{have})")
                error.target = target
                raise error
        self._targets = await self._vault.run(self._config.targets)
        usable = [a for a in accounts if a.target in self._targets] or accounts
        active = await self._last_active()

        def key(item: tuple[int, PersonAccount]) -> tuple[float, int, int]:
            position, acc = item
            seen = self._slots[acc.target].seen.get(acc.user) if acc.target in self._slots \
                else None
            presence = seen[0] if seen else PresenceState.OFFLINE
            return (-active.get(acc, _EPOCH).timestamp(), rank(presence), position)

        return min(enumerate(usable), key=key)[1]

    async def send_to_person(self, person: PersonRef, body: str,
                             target: str | None = None, *,
                             client_msg_id: str | None = None) -> Message:
        """Send ``body`` to a person: to the network they were last active on, unless
        ``target`` names one (see :meth:`person_route`). The message names the target used."""
        acc = await self.person_route(person, target)
        return await self.send(acc.target, acc.user, body, client_msg_id=client_msg_id)

    async def person_history(self, person: PersonRef, *, limit: int = 50
                             ) -> PersonHistory:
        """The conversations with every account of a person as one, ordered by time (oldest
        first, the newest ``limit``); each message names its target. Each network's own order
        is kept; across networks the times decide (XMPP stamps whole seconds, so two messages
        on two networks within one second may show in either order). A target that cannot be
        asked is left out and named in ``problems`` (raised if none could be asked)."""
        if not 1 <= limit <= 500:
            raise ConfigError("limit must be between 1 and 500")
        found = self._find(await self._stored(), person)
        accounts = [PersonAccount(*a) for a in found.accounts]

        async def one(acc: PersonAccount) -> list[Message] | InterappError:
            try:
                return await self.history(acc.target, acc.user, limit=limit)
            except InterappError as exc:
                if exc.target is None:
                    exc.target = acc.target
                return exc

        results = await asyncio.gather(*(one(a) for a in accounts))
        problems = {a.target: r for a, r in zip(accounts, results, strict=True)
                    if isinstance(r, InterappError)}
        if problems and len(problems) == len(accounts):
            raise next(iter(problems.values()))
        pages = [sorted(r, key=lambda m: when(m.sent_at)) for r in results  # stable: keeps
                 if not isinstance(r, InterappError)]                        # each one's order
        merged = list(heapq.merge(*pages, key=lambda m: when(m.sent_at)))
        return PersonHistory(merged[-limit:], problems)
