"""The people tables (vault revision 0003) on SQLite and PostgreSQL: merges per local account,
an account in one person at most (also when two vault handles write at once), splits that
dissolve what is left with one account, the newest activity kept, and an upgrade from 0002."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from vault_helpers import KEY_ENV, Backend

from interapp.errors import AccountInPerson, ConfigError, UnknownPerson
from interapp.vault import Vault
from interapp.vault.schema import SCHEMA_REVISION, current_revision

ALICE = ("https://arena.example", "alice")
CAROL = ("https://arena.example", "carol")


def test_merge_split_and_owners(backend: Backend) -> None:
    with backend.open() as v:
        store = v.people
        bob = store.merge(ALICE, [("chatter", "bob"), ("xmpp", "bob@example.org")], name=None,
                          default_name="Bob")
        assert (bob.name, bob.accounts) == ("Bob", (("chatter", "bob"),
                                                    ("xmpp", "bob@example.org")))
        assert store.list(CAROL) == []  # another local account sees none of alice's
        same = store.merge(CAROL, [("chatter", "bob"), ("xmpp", "bob@example.org")],
                           name="Bobby", default_name="x")
        assert same.id != bob.id  # carol may merge the same accounts for herself
        grown = store.merge(ALICE, [("matrix", "@bob:hs"), ("xmpp", "bob@example.org")],
                            name=None, default_name="ignored")
        assert grown.id == bob.id and grown.name == "Bob"
        assert grown.accounts[-1] == ("matrix", "@bob:hs")
        store.merge(ALICE, [("chatter", "carol"), ("xmpp", "carol@example.org")],
                    name="Carol", default_name="x")
        with pytest.raises(AccountInPerson, match="already in person 'Carol'"):
            store.merge(ALICE, [("chatter", "bob"), ("chatter", "carol")], name=None,
                        default_name="x")
        with pytest.raises(ConfigError, match="already named 'Carol'"):
            store.merge(ALICE, [("chatter", "dave"), ("xmpp", "dave@x")], name=" carol ",
                        default_name="x")
        with pytest.raises(ConfigError, match="at least two"):
            store.merge(ALICE, [("chatter", "dave")], name=None, default_name="Dave")
        with pytest.raises(UnknownPerson):
            store.split(ALICE, accounts=[("chatter", "nobody")])
        assert store.split(ALICE, accounts=[("matrix", "@bob:hs")]) == [("matrix", "@bob:hs")]
        assert store.split(ALICE, accounts=[("xmpp", "bob@example.org")]) == [
            ("chatter", "bob"), ("xmpp", "bob@example.org")]  # one left: dissolved
        assert [p.name for p in store.list(ALICE)] == ["Carol"]
        (carol,) = store.list(ALICE)
        assert store.split(ALICE, person_ids=[carol.id]) == list(carol.accounts)
        assert store.list(ALICE) == [] and [p.name for p in store.list(CAROL)] == ["Bobby"]
    rows = backend.sql("SELECT COUNT(*) FROM person_accounts")
    assert rows[0][0] == 2  # carol's two, nothing of alice's left behind


def test_activity_keeps_the_newest(backend: Backend) -> None:
    with backend.open() as v:
        store = v.people
        assert store.record_activity(ALICE, [("chatter", "bob", "2026-01-01T10:00:00+00:00",
                                              "message")]) == 1
        assert store.record_activity(ALICE, [("chatter", "bob", "2026-01-01T09:00:00+00:00",
                                              "presence")]) == 0
        store.record_activity(ALICE, [("xmpp", "bob@x", "2026-01-01T11:00:00+00:00",
                                       "presence")])
        assert store.activity(ALICE) == {
            ("chatter", "bob"): ("2026-01-01T10:00:00+00:00", "message"),
            ("xmpp", "bob@x"): ("2026-01-01T11:00:00+00:00", "presence")}
        assert store.activity(CAROL) == {}


def test_two_writers_cannot_put_one_account_in_two_persons(backend: Backend) -> None:
    with backend.open() as a, backend.open() as b:
        def merge(v: Vault, other: str) -> str:
            try:
                return v.people.merge(ALICE, [("chatter", "bob"), ("xmpp", other)], name=other,
                                      default_name="x").id
            except AccountInPerson:
                return "refused"

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(merge, (a, b), ("one@x", "two@x")))
        persons = a.people.list(ALICE)
        owners = [p for p in persons if ("chatter", "bob") in p.accounts]
        assert len(owners) == 1  # never two
        if "refused" not in results:  # the second joined the first one's person
            assert len(owners[0].accounts) == 3


def test_a_0002_vault_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    with Vault.open(path, env=KEY_ENV) as v:
        v.people.merge(ALICE, [("a", "1"), ("b", "2")], name="One", default_name="x")
    conn = sqlite3.connect(path)
    try:  # back to 0002 by hand, as an older interapp left it
        for table in ("stream_cursors", "account_activity", "person_accounts", "people"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE alembic_version SET version_num = '0002'")
        conn.commit()
    finally:
        conn.close()
    with Vault.open(path, env=KEY_ENV) as v:
        assert v.people.list(ALICE) == []
        assert v.verify_audit().ok
        v.people.merge(ALICE, [("a", "1"), ("b", "2")], name="One", default_name="x")
    from interapp.vault.db import Database

    db = Database(path)
    try:
        assert current_revision(db) == SCHEMA_REVISION == "0004"
    finally:
        db.dispose()
