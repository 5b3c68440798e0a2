"""Core vault behaviour, run on both SQLite and PostgreSQL (see the ``backend`` fixture)."""

from __future__ import annotations

import threading

import pytest
from vault_helpers import (
    OTHER_KEY_ENV,
    SECRET_CLIENT,
    SECRET_PASSWORD,
    SECRET_REFRESH,
    Backend,
    drop_audit_guards,
    make_link_factory,
    refresh_credential,
)

from interapp.errors import NotFoundError, VaultError, VaultLocked, VaultTampered
from interapp.secret import Secret
from interapp.vault import AuditEvent, Credential, LinkState, StaleVersion, Vault


def test_link_round_trip(vault: Vault) -> None:
    make = make_link_factory(vault)
    link = make("alice", "matrix")
    assert link.state is LinkState.LINKED and link.version == 1 and link.last_used_at is None
    assert vault.get_link("https://home.example", "alice", "matrix") == link
    assert vault.get_link_by_id(link.id) == link
    assert vault.get_link("https://home.example", "alice", "xmpp") is None
    assert vault.get_link_by_id("nope") is None

    cred = vault.read_credential(link.id)
    assert cred == refresh_credential() and cred.get("refresh_token") == SECRET_REFRESH
    used = vault.get_link_by_id(link.id)
    assert used is not None and used.last_used_at is not None


def test_list_links_filters_and_order(vault: Vault) -> None:
    make = make_link_factory(vault)
    make("bob", "xmpp")
    make("alice", "xmpp")
    make("alice", "matrix")
    make("alice", "matrix", local_app="https://other.example")
    triples = [(x.local_app, x.local_account, x.target) for x in vault.list_links()]
    assert triples == sorted(triples) and len(triples) == 4
    assert {x.target for x in vault.list_links(local_account="alice")} == {"matrix", "xmpp"}
    assert len(vault.list_links(local_app="https://home.example")) == 3
    assert len(vault.list_links("https://home.example", "alice")) == 2


def test_duplicate_link_is_refused(vault: Vault) -> None:
    make = make_link_factory(vault)
    make("alice", "matrix")
    with pytest.raises(VaultError, match="already linked"):
        make("alice", "matrix")
    assert len(vault.list_links()) == 1


def test_replace_credential_compare_and_swap(vault: Vault) -> None:
    link = make_link_factory(vault)()
    new = refresh_credential("rotated-token-1")
    updated = vault.replace_credential(link.id, expected_version=1, credential=new)
    assert updated.version == 2
    with pytest.raises(StaleVersion) as info:
        vault.replace_credential(link.id, expected_version=1,
                                 credential=refresh_credential("rotated-token-2"))
    assert info.value.code == "vault_stale"
    assert vault.read_credential(link.id) == new
    with pytest.raises(NotFoundError):
        vault.replace_credential("missing", expected_version=1, credential=new)


def test_concurrent_replace_has_exactly_one_winner(vault: Vault) -> None:
    link = make_link_factory(vault)()
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def swap(i: int) -> None:
        barrier.wait()
        try:
            vault.replace_credential(link.id, expected_version=1,
                                     credential=refresh_credential(f"t-{i}"))
            outcomes.append("won")
        except StaleVersion:
            outcomes.append("stale")

    threads = [threading.Thread(target=swap, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["stale"] * 5 + ["won"]
    current = vault.get_link_by_id(link.id)
    assert current is not None and current.version == 2


def test_state_repair_and_delete(vault: Vault) -> None:
    link = make_link_factory(vault)()
    degraded = vault.set_state(link.id, LinkState.NEEDS_REAUTH, "invalid_grant")
    assert degraded.state is LinkState.NEEDS_REAUTH and degraded.state_reason == "invalid_grant"
    assert degraded.version == link.version
    assert degraded.last_used_at is None
    with pytest.raises(VaultError):  # a stored link is never 'unlinked': it is deleted
        vault.set_state(link.id, LinkState.UNLINKED)

    fresh = Credential("password", {"password": SECRET_PASSWORD})
    repaired = vault.repair_link(link.id, remote_account_id="@alice2:matrix",
                                 remote_account_name="Alice 2", credential=fresh)
    assert repaired.state is LinkState.LINKED and repaired.state_reason == ""
    assert repaired.version == 2 and repaired.credential_kind == "password"
    assert repaired.remote_account_id == "@alice2:matrix"
    assert repaired.last_used_at is not None  # the repair was a sign-in: the link was used
    assert vault.read_credential(link.id) == fresh

    vault.delete_link(link.id, detail={"remote_revocation": "ok"})
    assert vault.get_link_by_id(link.id) is None
    with pytest.raises(NotFoundError):
        vault.read_credential(link.id)
    with pytest.raises(NotFoundError):
        vault.set_state(link.id, LinkState.REVOKED)


def test_secrets_round_trip(vault: Vault) -> None:
    assert vault.get_secret("client_secret") is None
    vault.put_secret("client_secret", Secret(SECRET_CLIENT))
    assert vault.get_secret("client_secret") == Secret(SECRET_CLIENT)
    vault.put_secret("client_secret", Secret("second-value"))
    got = vault.get_secret("client_secret")
    assert got is not None and got.reveal() == "second-value"
    assert vault.delete_secret("client_secret") is True
    assert vault.delete_secret("client_secret") is False
    assert vault.get_secret("client_secret") is None
    with pytest.raises(VaultError):
        vault.put_secret("x", SECRET_CLIENT)  # type: ignore[arg-type]


def test_audit_entries_for_every_operation(vault: Vault) -> None:
    link = make_link_factory(vault)()
    vault.read_credential(link.id)
    vault.read_credential(link.id, audit=False)
    vault.replace_credential(link.id, expected_version=1, credential=refresh_credential("r2"))
    vault.set_state(link.id, LinkState.DEGRADED, "connection lost")
    vault.repair_link(link.id, remote_account_id="@alice:matrix", remote_account_name="Alice",
                      credential=refresh_credential("r3"))
    vault.record(AuditEvent.PROMPT, link_id=link.id, target=link.target, detail={"face": "cli"})
    vault.put_secret("host_token", Secret(SECRET_CLIENT))
    vault.delete_link(link.id, detail={"remote_revocation": "unsupported"})

    events = [e.event for e in vault.audit_log()]
    assert events == [AuditEvent.LINK, AuditEvent.CREDENTIAL_USE, AuditEvent.REFRESH,
                      AuditEvent.STATE, AuditEvent.REAUTH, AuditEvent.PROMPT, AuditEvent.SECRET,
                      AuditEvent.UNLINK]
    entries = vault.audit_log(link_id=link.id)
    assert len(entries) == 7 and all(e.target == "matrix" for e in entries)
    assert entries[-1].detail["remote_revocation"] == "unsupported"
    assert [e.seq for e in vault.audit_log()] == list(range(1, 9))
    report = vault.verify_audit()
    assert report.ok and report.entries == 8 and report.first_bad_seq is None
    text = repr(vault.audit_log())
    for secret in (SECRET_REFRESH, SECRET_CLIENT, "r2", "r3"):
        assert f"'{secret}'" not in text


def test_record_refuses_secret_material(vault: Vault) -> None:
    cred = refresh_credential()
    for bad in ({"token": Secret("x")}, {"cred": cred}, {"token": str(Secret("x"))},
                {"cred": repr(cred)}, {"n": 3}):
        with pytest.raises(VaultError):
            vault.record(AuditEvent.PROMPT, detail=bad)  # type: ignore[arg-type]
    assert vault.audit_log() == []
    entry = vault.record(AuditEvent.PROMPT, target="matrix", detail={"face": "web"})
    assert entry.seq == 1 and entry.prev_hash == "0" * 64


def test_audit_is_append_only(backend: Backend, vault: Vault) -> None:
    make_link_factory(vault)()
    with pytest.raises(Exception, match="append-only"):
        backend.sql("UPDATE audit SET event = 'x' WHERE seq = 1")
    with pytest.raises(Exception, match="append-only"):
        backend.sql("DELETE FROM audit")
    assert vault.verify_audit().ok


def _fill(vault: Vault) -> None:
    link = make_link_factory(vault)()
    for i in range(4):
        vault.record(AuditEvent.PROMPT, link_id=link.id, detail={"n": str(i)})


def test_audit_tamper_is_found(backend: Backend, vault: Vault) -> None:
    _fill(vault)
    assert vault.verify_audit().ok
    drop_audit_guards(backend)
    backend.sql("""UPDATE audit SET detail = '{"n":"9"}' WHERE seq = 3""")
    report = vault.verify_audit()
    assert not report.ok and report.first_bad_seq == 3 and report.entries >= 3


def test_audit_deleted_entry_is_found(backend: Backend, vault: Vault) -> None:
    _fill(vault)
    drop_audit_guards(backend)
    backend.sql("DELETE FROM audit WHERE seq = 2")
    report = vault.verify_audit()
    assert not report.ok and report.first_bad_seq == 3


def test_audit_truncation_is_found(backend: Backend, vault: Vault) -> None:
    _fill(vault)
    drop_audit_guards(backend)
    backend.sql("DELETE FROM audit WHERE seq >= 4")
    report = vault.verify_audit()
    assert not report.ok and report.first_bad_seq == 4 and report.entries == 3


def test_flipped_ciphertext_byte_is_tampering(backend: Backend, vault: Vault) -> None:
    link = make_link_factory(vault)()
    (blob,) = backend.sql("SELECT credential FROM links WHERE id = :i", i=link.id)[0]
    flipped = bytearray(blob)
    flipped[len(flipped) // 2] ^= 0x01
    backend.sql("UPDATE links SET credential = :b WHERE id = :i", b=bytes(flipped), i=link.id)
    with pytest.raises(VaultTampered):
        vault.read_credential(link.id)
    assert vault.audit_log(link_id=link.id)[-1].event is AuditEvent.LINK


def test_swapped_ciphertext_is_tampering(backend: Backend, vault: Vault) -> None:
    make = make_link_factory(vault)
    a = make("alice", "matrix")
    b = make("bob", "matrix", credential=refresh_credential("bobs-token"))
    (blob,) = backend.sql("SELECT credential FROM links WHERE id = :i", i=a.id)[0]
    backend.sql("UPDATE links SET credential = :b WHERE id = :i", b=bytes(blob), i=b.id)
    with pytest.raises(VaultTampered):
        vault.read_credential(b.id)
    assert vault.read_credential(a.id) == refresh_credential()


def test_swapped_secret_is_tampering(backend: Backend, vault: Vault) -> None:
    vault.put_secret("one", Secret("first"))
    vault.put_secret("two", Secret("second"))
    (blob,) = backend.sql("SELECT blob FROM secrets WHERE name = 'one'")[0]
    backend.sql("UPDATE secrets SET blob = :b WHERE name = 'two'", b=bytes(blob))
    with pytest.raises(VaultTampered):
        vault.get_secret("two")


def test_wrong_key_is_locked(backend: Backend) -> None:
    with backend.open() as v:
        make_link_factory(v)()
    with pytest.raises(VaultLocked, match="does not open this vault"):
        backend.open(OTHER_KEY_ENV)
    with pytest.raises(VaultLocked, match="no vault key"):
        backend.open({"INTERAPP_VAULT_KEYRING": "0"})
    with backend.open() as v:
        assert len(v.list_links()) == 1


def test_reopen_keeps_everything(backend: Backend) -> None:
    with backend.open() as v:
        link = make_link_factory(v)()
        v.put_secret("s", Secret(SECRET_CLIENT))
        assert v.key_source == "env-raw"
    with backend.open() as v:
        assert v.read_credential(link.id) == refresh_credential()
        assert v.get_secret("s") == Secret(SECRET_CLIENT)
        assert v.verify_audit().ok


def test_reprs_hide_secrets(vault: Vault) -> None:
    link = make_link_factory(vault)()
    cred = vault.read_credential(link.id)
    for text in (repr(cred), str(cred), repr(cred.fields), repr(link), str(link), repr(vault)):
        assert SECRET_REFRESH not in text
    assert repr(cred) == "Credential(kind='refresh_token', fields=[client_hint, refresh_token])"
    assert repr(vault).startswith("Vault(")


def test_closed_vault_refuses_use(backend: Backend) -> None:
    v = backend.open()
    v.close()
    v.close()
    with pytest.raises(VaultError, match="closed"):
        v.list_links()
