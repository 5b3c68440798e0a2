"""Upgrading a vault of revision 0001 (written by the previous interapp) to 0002.

``data/vault-0001.db`` is a real vault written by the code before ``audit.rows`` existed: two
links (one refreshed, one degraded), a third linked then unlinked, a secret, a prompt — nine
entries whose hashes do not cover any rows. Opening it with its key upgrades the schema and
appends one ``anchor`` entry recording every row; from then on a cut behind an older head is
found as in a new vault. The same vault is also loaded into PostgreSQL at revision 0001.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from vault_helpers import Backend, drop_audit_guards, refresh_credential

from interapp.vault import AuditEvent
from interapp.vault.db import Database
from interapp.vault.schema import MIGRATIONS_DIR, SCHEMA_REVISION, current_revision

OLD_VAULT = Path(__file__).parent / "data" / "vault-0001.db"
OLD_KEY_ENV = {"INTERAPP_VAULT_KEY": "aW50ZXJhcHAtdGVzdC12YXVsdC0wMDAxLWtleS0zMmI",
               "INTERAPP_VAULT_KEYRING": "0"}
TABLES = ("meta", "links", "secrets", "audit")


def _alembic(db: Database, revision: str, *, down: bool = False) -> None:
    with db.write() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _old_rows() -> dict[str, list[dict[str, Any]]]:
    conn = sqlite3.connect(f"{OLD_VAULT.as_uri()}?mode=ro", uri=True)  # the file stays as it is
    conn.row_factory = sqlite3.Row
    try:
        return {t: [dict(r) for r in conn.execute(f"SELECT * FROM {t}")]
                for t in TABLES}
    finally:
        conn.close()


@pytest.fixture
def old_vault(backend: Backend) -> Backend:
    """The 0001 vault, as a file copy (SQLite) or loaded row by row (PostgreSQL)."""
    if backend.name == "sqlite":
        shutil.copyfile(OLD_VAULT, backend.location)
        return backend
    db = Database(backend.location)
    try:
        _alembic(db, "0001")
        with db.write() as conn:
            from sqlalchemy import text

            for table, rows in _old_rows().items():
                for row in rows:
                    cols = ", ".join(row)
                    conn.execute(text(f"INSERT INTO {table} ({cols}) "
                                      f"VALUES ({', '.join(':' + c for c in row)})"), row)
    finally:
        db.dispose()
    return backend


def test_the_old_vault_is_revision_0001() -> None:
    old = _old_rows()
    assert [r["key"] for r in old["meta"] if r["key"] == "audit_head"] == ["audit_head"]
    assert {r["event"] for r in old["audit"]} >= {"link", "refresh", "unlink", "state"}
    conn = sqlite3.connect(f"{OLD_VAULT.as_uri()}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
        assert "rows" not in {r[1] for r in conn.execute("PRAGMA table_info(audit)")}
    finally:
        conn.close()


def test_upgrade_anchors_the_rows_once_and_keeps_the_old_chain(old_vault: Backend) -> None:
    before = _old_rows()["audit"]
    with old_vault.open(OLD_KEY_ENV) as v:
        entries = v.audit_log()
        assert len(entries) == len(before) + 1
        assert [(e.seq, e.hash) for e in entries[:-1]] == [(r["seq"], r["hash"]) for r in before]
        assert all(e.rows is None for e in entries[:-1])
        anchor = entries[-1]
        assert anchor.event is AuditEvent.ANCHOR
        assert anchor.detail == {"schema": SCHEMA_REVISION, "rows": "3"}
        assert anchor.rows is not None
        links = {f"link:{ln.id}" for ln in v.list_links()}
        assert set(anchor.rows) == links | {"secret:local:client_secret"}
        assert all(b is None and a is not None for b, a in anchor.rows.values())
        report = v.verify_audit()
        assert report.ok and report.entries == len(before) + 1, report
        # the old credentials still open
        (chatter,) = [ln for ln in v.list_links() if ln.target == "chatter"]
        assert v.read_credential(chatter.id).get("refresh_token") == "old-a2"
    db = Database(old_vault.location)
    try:
        assert current_revision(db) == SCHEMA_REVISION
    finally:
        db.dispose()
    with old_vault.open(OLD_KEY_ENV) as v:  # anchored once only
        assert [e.event for e in v.audit_log()].count(AuditEvent.ANCHOR) == 1
        assert v.verify_audit().ok


def test_after_the_upgrade_a_cut_behind_an_older_head_is_found(old_vault: Backend) -> None:
    with old_vault.open(OLD_KEY_ENV) as v:
        keep = v.audit_log()[-1].seq  # the anchor
        (saved,) = old_vault.sql("SELECT value FROM meta WHERE key = 'audit_head'")[0]
        (chatter,) = [ln for ln in v.list_links() if ln.target == "chatter"]
        v.replace_credential(chatter.id, expected_version=chatter.version,
                             credential=refresh_credential("new-a3"))
        drop_audit_guards(old_vault)
        old_vault.sql("DELETE FROM audit WHERE seq > :k", k=keep)
        old_vault.sql("UPDATE meta SET value = :h WHERE key = 'audit_head'", h=saved)
        report = v.verify_audit()
    assert not report.ok and report.first_bad_seq == keep + 1
    assert f"link:{chatter.id} is not as its last audit entry (seq {keep})" in report.reason


def test_downgrade_is_refused_once_entries_bind_rows(old_vault: Backend) -> None:
    with old_vault.open(OLD_KEY_ENV):
        pass
    db = Database(old_vault.location)
    try:
        with pytest.raises(RuntimeError, match="already binds rows"):
            _alembic(db, "0001", down=True)
        assert current_revision(db) == SCHEMA_REVISION
    finally:
        db.dispose()
