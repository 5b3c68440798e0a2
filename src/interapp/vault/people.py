"""The local user's persons — accounts on several targets merged into one human — and when
each buddy account was last active.

Theory of operation
-------------------
Why here: the merges sit in the vault's own database (revision 0003, see
``migrations/versions/v0003_people.py``) rather than in a file of their own, so they follow
the vault wherever it lives — the data folder's ``vault.db``, memory (``Host.open(memory=True)``)
or PostgreSQL — with the same schema upgrades, and run on the vault's worker thread like every
other vault call (never on the event loop). A unique constraint on (local account, target,
user) keeps an account in at most one person even when the agent and a command line write at
once. The tables hold no secret, so nothing is sealed or audited; this module has no network
code at all: a merge is the user's decision and is never sent to any server.

Every method is one short transaction of the :class:`~interapp.vault.db.Database`, scoped to
one *owner*: the local application's issuer and the local account.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from interapp.errors import AccountInPerson, ConfigError, UnknownPerson
from interapp.vault.db import Database
from interapp.vault.schema import account_activity, people, person_accounts

__all__ = ["MAX_NAME", "Owner", "PeopleStore", "StoredPerson"]

MAX_NAME = 128
Owner = tuple[str, str]
"""(local application issuer, local account)."""
Account = tuple[str, str]
"""(target, user)."""


@dataclass(frozen=True)
class StoredPerson:
    """One person as stored: its accounts in the order they were merged."""

    id: str
    name: str
    accounts: tuple[Account, ...]
    created_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _fold(name: str) -> str:
    return " ".join(name.split()).casefold()


def check_name(name: str) -> str:
    """A person's name, trimmed; ConfigError if empty or too long."""
    clean = " ".join(name.split())
    if not clean:
        raise ConfigError("a person's name must not be empty")
    if len(clean) > MAX_NAME:
        raise ConfigError(f"a person's name is longer than {MAX_NAME} characters")
    return clean


class PeopleStore:
    """The ``people`` tables of one vault database (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # --- reading ---------------------------------------------------------------------------

    @staticmethod
    def _load(conn: Connection, owner: Owner) -> list[StoredPerson]:
        app, account = owner
        rows = conn.execute(select(people).where(people.c.local_app == app,
                                                 people.c.local_account == account)
                            .order_by(people.c.created_at, people.c.id)).mappings().all()
        members = conn.execute(
            select(person_accounts.c.person_id, person_accounts.c.target,
                   person_accounts.c.user)
            .where(person_accounts.c.local_app == app,
                   person_accounts.c.local_account == account)
            .order_by(person_accounts.c.position, person_accounts.c.added_at)).all()
        by_person: dict[str, list[Account]] = {}
        for pid, target, user in members:
            by_person.setdefault(pid, []).append((target, user))
        return [StoredPerson(r["id"], r["name"], tuple(by_person.get(r["id"], ())),
                             r["created_at"]) for r in rows]

    def list(self, owner: Owner) -> list[StoredPerson]:
        """Every person of ``owner``, oldest first."""
        with self._db.read() as conn:
            return self._load(conn, owner)

    def activity(self, owner: Owner) -> dict[Account, tuple[str, str]]:
        """(target, user) → (ISO time last active, how: ``message`` or ``presence``)."""
        app, account = owner
        with self._db.read() as conn:
            rows = conn.execute(select(account_activity).where(
                account_activity.c.local_app == app,
                account_activity.c.local_account == account)).mappings().all()
        return {(r["target"], r["user"]): (r["at"], r["how"]) for r in rows}

    # --- writing ---------------------------------------------------------------------------

    def merge(self, owner: Owner, accounts: Sequence[Account], *, name: str | None,
              default_name: str) -> StoredPerson:
        """Put ``accounts`` in one person: a new one, or the one person some of them already
        belong to (then the others join it). Raises AccountInPerson when they belong to two
        persons, ConfigError when the result would have fewer than two accounts or its name
        is taken by another person."""
        wanted = list(dict.fromkeys(accounts))
        app, account = owner
        with self._db.write() as conn:
            current = self._load(conn, owner)
            owners = {a: p for p in current for a in p.accounts}
            involved = list(dict.fromkeys(owners[a].id for a in wanted if a in owners))
            if len(involved) > 1:
                first, second = (next(p for p in current if p.id == i) for i in involved[:2])
                taken = next(a for a in wanted if owners.get(a) is second)
                raise AccountInPerson(
                    f"{taken[0]}:{taken[1]} is already in person {second.name!r} (and "
                    f"others are in {first.name!r}); split it first (interapp people split "
                    f"{taken[0]}:{taken[1]})")
            person = next((p for p in current if p.id == involved[0]), None) \
                if involved else None
            total = list(dict.fromkeys([*(person.accounts if person else ()), *wanted]))
            if len(total) < 2:
                raise ConfigError("a person needs at least two accounts to merge")
            chosen = check_name(name if name is not None else
                                person.name if person else default_name)
            clash = next((p for p in current if _fold(p.name) == _fold(chosen)
                          and (person is None or p.id != person.id)), None)
            if clash is not None:
                raise ConfigError(f"another person is already named {clash.name!r} "
                                  f"({clash.id}); choose another --name")
            now = _now()
            if person is None:
                pid = "p_" + uuid.uuid4().hex[:16]
                conn.execute(insert(people).values(id=pid, local_app=app, local_account=account,
                                                   name=chosen, created_at=now, updated_at=now))
                created, have = now, 0
            else:
                pid, created, have = person.id, person.created_at, len(person.accounts)
                conn.execute(update(people).where(people.c.id == pid)
                             .values(name=chosen, updated_at=now))
            known = set(person.accounts) if person else set()
            for target, user in (a for a in total if a not in known):
                conn.execute(insert(person_accounts).values(
                    person_id=pid, local_app=app, local_account=account, target=target,
                    user=user, position=have, added_at=now))
                have += 1
            return StoredPerson(pid, chosen, tuple(total), created)

    def rename(self, owner: Owner, person_id: str, name: str) -> StoredPerson:
        """Give a person another name (unique among ``owner``'s persons, case aside)."""
        chosen = check_name(name)
        with self._db.write() as conn:
            current = self._load(conn, owner)
            person = next((p for p in current if p.id == person_id), None)
            if person is None:
                raise UnknownPerson(f"no person {person_id!r}")
            clash = next((p for p in current if _fold(p.name) == _fold(chosen)
                          and p.id != person_id), None)
            if clash is not None:
                raise ConfigError(f"another person is already named {clash.name!r} "
                                  f"({clash.id}); choose another name")
            conn.execute(update(people).where(people.c.id == person_id)
                         .values(name=chosen, updated_at=_now()))
            return StoredPerson(person.id, chosen, person.accounts, person.created_at)

    def split(self, owner: Owner, *, person_ids: Iterable[str] = (),
              accounts: Iterable[Account] = ()) -> builtins.list[Account]:
        """Take ``accounts`` out of their persons, and dissolve the persons ``person_ids``; a
        person left with fewer than two accounts is dissolved too. Returns the accounts now
        on their own (UnknownPerson, and nothing changed, if one is not in a person)."""
        app, account = owner
        freed: builtins.list[Account] = []
        with self._db.write() as conn:
            current = {p.id: p for p in self._load(conn, owner)}
            drop: set[str] = set()
            remove: builtins.list[Account] = []
            for person_id in person_ids:
                if person_id not in current:
                    raise UnknownPerson(f"no person {person_id!r}")
                drop.add(person_id)
            owners = {a: p for p in current.values() for a in p.accounts}
            for acc in dict.fromkeys(accounts):
                if acc not in owners:
                    raise UnknownPerson(f"{acc[0]}:{acc[1]} is not part of any person")
                remove.append(acc)
            for pid, person in current.items():
                left = [a for a in person.accounts if a not in remove]
                if pid in drop or len(left) < 2:
                    drop.add(pid)
                    freed.extend(person.accounts)
                else:
                    freed.extend(a for a in person.accounts if a in remove)
            for acc in remove:
                conn.execute(delete(person_accounts).where(
                    person_accounts.c.local_app == app,
                    person_accounts.c.local_account == account,
                    person_accounts.c.target == acc[0], person_accounts.c.user == acc[1]))
            for pid in drop:
                conn.execute(delete(person_accounts).where(person_accounts.c.person_id == pid))
                conn.execute(delete(people).where(people.c.id == pid))
        return list(dict.fromkeys(freed))

    def record_activity(self, owner: Owner, seen: Iterable[tuple[str, str, str, str]]) -> int:
        """Store (target, user, ISO time, how) activity, keeping the newest per account.
        Returns how many rows changed."""
        app, account = owner
        changed = 0
        with self._db.write() as conn:
            for target, user, at, how in seen:
                where = (account_activity.c.local_app == app,
                         account_activity.c.local_account == account,
                         account_activity.c.target == target, account_activity.c.user == user)
                before = conn.execute(select(account_activity.c.at).where(*where)).scalar()
                if before is None:
                    conn.execute(insert(account_activity).values(
                        local_app=app, local_account=account, target=target, user=user,
                        at=at, how=how))
                elif _after(at, before):
                    conn.execute(update(account_activity).where(*where).values(at=at, how=how))
                else:
                    continue
                changed += 1
        return changed

    def count(self, owner: Owner) -> int:
        """How many persons ``owner`` has."""
        app, account = owner
        with self._db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(people).where(
                people.c.local_app == app, people.c.local_account == account)).scalar() or 0)


def _after(a: str, b: str) -> bool:
    try:
        return datetime.fromisoformat(a) > datetime.fromisoformat(b)
    except ValueError:
        return a > b
