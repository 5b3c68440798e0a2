"""SQLite specifics: file permissions, no plaintext on disk, the fast open path, migrations."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from vault_helpers import (
    KEY_ENV,
    RAW_KEY,
    SECRET_CLIENT,
    SECRET_PASSWORD,
    SECRET_REFRESH,
    make_link_factory,
    refresh_credential,
)

from interapp.errors import VaultError
from interapp.secret import Secret
from interapp.vault import Credential, Vault
from interapp.vault.schema import MIGRATIONS_DIR, SCHEMA_REVISION

SRC = Path(__file__).resolve().parents[2] / "src"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _files(path: Path) -> list[Path]:
    return [p for p in (Path(f"{path}{s}") for s in ("", "-wal", "-shm", "-journal"))
            if p.exists()]


def _fill(v: Vault) -> None:
    make = make_link_factory(v)
    link = make("alice", "matrix")
    make("bob", "xmpp", credential=Credential("password", {"password": SECRET_PASSWORD}))
    v.put_secret("client_secret", Secret(SECRET_CLIENT))
    v.read_credential(link.id)
    v.replace_credential(link.id, expected_version=1,
                         credential=refresh_credential(SECRET_REFRESH + "-2"))


def test_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "sub" / "vault.db"
        with Vault.open(path, env=KEY_ENV) as v:
            _fill(v)
            present = _files(path)
            assert {p.name for p in present} >= {"vault.db", "vault.db-wal", "vault.db-shm"}
            for p in present:
                assert _mode(p) == 0o600, p
        assert _mode(path) == 0o600
        assert _mode(path.parent) == 0o700
    finally:
        os.umask(old)


def test_existing_loose_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    with Vault.open(path, env=KEY_ENV):
        pass
    path.chmod(0o644)
    with Vault.open(path, env=KEY_ENV):
        assert _mode(path) == 0o600


def test_no_plaintext_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    needles = [SECRET_REFRESH.encode(), SECRET_PASSWORD.encode(), SECRET_CLIENT.encode(),
               KEY_ENV["INTERAPP_VAULT_KEY"].encode(), RAW_KEY]
    with Vault.open(path, env=KEY_ENV) as v:
        _fill(v)
        on_disk = b"".join(p.read_bytes() for p in _files(path))
        assert b"alice" in on_disk  # the check can see plain data at all
        for needle in needles:
            assert needle not in on_disk
    on_disk = b"".join(p.read_bytes() for p in _files(path))
    for needle in needles:
        assert needle not in on_disk


def test_wal_and_normal_sync(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    with Vault.open(path, env=KEY_ENV):
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()


def test_audit_triggers_exist(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    with Vault.open(path, env=KEY_ENV) as v:
        make_link_factory(v)()
    conn = sqlite3.connect(path)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        assert names == {"audit_no_update", "audit_no_delete"}
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit SET hash = 'x'")
    finally:
        conn.close()


def test_schema_revision_is_alembic_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_current_head() == SCHEMA_REVISION


def test_reopening_does_not_import_alembic(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    with Vault.open(path, env=KEY_ENV):
        pass
    code = (
        "import sys\n"
        "from interapp.vault import Vault\n"
        f"v = Vault.open({str(path)!r}, env={KEY_ENV!r})\n"
        "v.close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'keyring',"
        " 'argon2')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    assert out.stderr == ""


def test_unknown_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    with Vault.open(path, env=KEY_ENV):
        pass
    conn = sqlite3.connect(path)
    conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.commit()
    conn.close()
    with pytest.raises(VaultError, match="newer"):
        Vault.open(path, env=KEY_ENV)


def test_memory_vault_keeps_links_for_its_life_only() -> None:
    from interapp.vault import Credential

    for location in ("sqlite://", ":memory:"):
        with Vault.open(location, env=KEY_ENV) as v:
            assert v.location == ":memory:"
            link = v.create_link(local_app="https://arena", local_account="alice", target="t",
                                 target_app="https://t", remote_account_id="1",
                                 remote_account_name="alice",
                                 credential=Credential("password", {"password": "pw"}))
            assert v.read_credential(link.id).get("password") == "pw"
            assert v.verify_audit().ok
        with Vault.open(location, env=KEY_ENV) as v:
            assert v.list_links() == []  # nothing was written anywhere


def test_sqlite_url_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "vault.db"
    with Vault.open(f"sqlite:///{path}", env=KEY_ENV) as v:
        assert v.location == str(path) and repr(v) == f"Vault({str(path)!r})"
    assert _mode(path) == 0o600
