"""The stream cursors (vault revision 0004) on SQLite and PostgreSQL: saved, replaced, kept
per local account and target, never audited, forgotten on delete; an upgrade from 0003."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from vault_helpers import KEY_ENV, Backend

from interapp.vault import Vault
from interapp.vault.db import Database
from interapp.vault.schema import SCHEMA_REVISION, current_revision


def test_put_get_replace_delete(backend: Backend) -> None:
    with backend.open() as v:
        store = v.cursors
        audited = len(v.audit_log())
        assert store.get("alice", "chatter") is None
        store.put("alice", "chatter", "c1")
        store.put("alice", "chatter", "c2")
        store.put("alice", "xmpp", "x1")
        store.put("carol", "chatter", "k1")
        assert store.get("alice", "chatter") == "c2"
        assert (store.get("alice", "xmpp"), store.get("carol", "chatter")) == ("x1", "k1")
        assert store.delete("alice", "chatter") and not store.delete("alice", "chatter")
        assert store.get("alice", "chatter") is None and store.get("alice", "xmpp") == "x1"
        assert len(v.audit_log()) == audited  # positions, not credentials: not audited
        assert v.verify_audit().ok
    assert backend.sql("SELECT COUNT(*) FROM stream_cursors")[0][0] == 2


def test_a_0003_vault_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    with Vault.open(path, env=KEY_ENV) as v:
        v.cursors.put("alice", "chatter", "c1")
    conn = sqlite3.connect(path)
    try:  # back to 0003 by hand, as an older interapp left it
        conn.execute("DROP TABLE stream_cursors")
        conn.execute("UPDATE alembic_version SET version_num = '0003'")
        conn.commit()
    finally:
        conn.close()
    with Vault.open(path, env=KEY_ENV) as v:
        assert v.cursors.get("alice", "chatter") is None
        v.cursors.put("alice", "chatter", "c2")
        assert v.cursors.get("alice", "chatter") == "c2"
        assert v.verify_audit().ok
    db = Database(path)
    try:
        assert current_revision(db) == SCHEMA_REVISION == "0004"
    finally:
        db.dispose()
