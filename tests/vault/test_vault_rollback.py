"""Cutting the audit log short behind an older sealed head, on SQLite and PostgreSQL.

The attack: someone who can write the vault's file (or database) but has no key drops the last
audit entries around the append-only triggers and copies back the sealed head saved when the log
was that long. The chain and that head agree, so the head alone cannot tell. What gives the cut
away is the rows: every entry records the digests of the link/secret rows it changed, before and
after, and the rows left in the vault are newer than the shortened log.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from vault_helpers import Backend, drop_audit_guards, make_link_factory, refresh_credential

from interapp.secret import Secret
from interapp.vault import AuditEvent, Link, LinkState, Vault


def head_value(backend: Backend) -> str:
    (value,) = backend.sql("SELECT value FROM meta WHERE key = 'audit_head'")[0]
    return str(value)


def cut(backend: Backend, keep: int, head: str | None) -> None:
    """Drop every entry after ``keep``; put back ``head`` (the one sealed at ``keep``)."""
    drop_audit_guards(backend)
    backend.sql("DELETE FROM audit WHERE seq > :keep", keep=keep)
    if head is not None:
        backend.sql("UPDATE meta SET value = :h WHERE key = 'audit_head'", h=head)


def last_seq(vault: Vault) -> int:
    return vault.audit_log()[-1].seq


Change = Callable[[Vault, Link], object]
CHANGES: dict[str, Change] = {
    "refresh": lambda v, ln: v.replace_credential(ln.id, expected_version=ln.version,
                                                  credential=refresh_credential("r-new")),
    "state": lambda v, ln: v.set_state(ln.id, LinkState.NEEDS_REAUTH, "refused"),
    "repair": lambda v, ln: v.repair_link(ln.id, remote_account_id="@alice:matrix",
                                          remote_account_name="Alice",
                                          credential=refresh_credential("r-repaired")),
    "unlink": lambda v, ln: v.delete_link(ln.id),
    "new link": lambda v, ln: make_link_factory(v)("bob", "xmpp"),
    "put secret": lambda v, ln: v.put_secret("client", Secret("another-client-secret")),
    "new secret": lambda v, ln: v.put_secret("other", Secret("a-new-secret")),
    "delete secret": lambda v, ln: v.delete_secret("client"),
}


def baseline(vault: Vault) -> Link:
    link = make_link_factory(vault)("alice", "matrix")
    vault.put_secret("client", Secret("the-client-secret"))
    vault.read_credential(link.id)
    return link


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_older_head_copied_back_after_a_cut_is_found(backend: Backend, vault: Vault,
                                                     change: str) -> None:
    link = baseline(vault)
    keep, saved = last_seq(vault), head_value(backend)
    CHANGES[change](vault, link)
    vault.record(AuditEvent.PROMPT, target="matrix", detail={"face": "cli"})
    assert vault.verify_audit().ok
    cut(backend, keep, saved)
    report = vault.verify_audit()
    assert not report.ok, change
    assert report.entries == keep and report.first_bad_seq == keep + 1
    assert "the log does not account for the vault's rows" in report.reason
    assert f"entries after seq {keep} are missing" in report.reason


def test_a_later_change_of_the_same_row_does_not_hide_the_cut(backend: Backend,
                                                              vault: Vault) -> None:
    link = baseline(vault)
    keep, saved = last_seq(vault), head_value(backend)
    v2 = vault.replace_credential(link.id, expected_version=1, credential=refresh_credential("2"))
    cut(backend, keep, saved)
    # the host goes on: the next refresh writes the same row again and seals a fresh head
    vault.replace_credential(link.id, expected_version=v2.version,
                             credential=refresh_credential("3"))
    report = vault.verify_audit()
    assert not report.ok and report.first_bad_seq == keep + 1
    assert f"link:{link.id} was changed between seq 1 and seq {keep + 1}" in report.reason
    assert "without an audit entry" in report.reason


def test_a_cut_without_the_old_head_stays_on_record(backend: Backend, vault: Vault) -> None:
    """Entries dropped and the head left alone: the next append notices and seals it in."""
    link = baseline(vault)
    keep = last_seq(vault)
    vault.record(AuditEvent.PROMPT, target="matrix", detail={"n": "1"})
    vault.record(AuditEvent.PROMPT, target="matrix", detail={"n": "2"})
    cut(backend, keep, None)
    vault.read_credential(link.id)  # a legitimate write after the cut
    vault.record(AuditEvent.PROMPT, target="matrix", detail={"n": "3"})
    report = vault.verify_audit()
    assert not report.ok and report.first_bad_seq == keep + 1
    assert f"entries after seq {keep} were missing when seq {keep + 1} was written" \
        in report.reason


def test_a_deleted_head_stays_on_record(backend: Backend, vault: Vault) -> None:
    baseline(vault)
    backend.sql("DELETE FROM meta WHERE key = 'audit_head'")
    vault.record(AuditEvent.PROMPT, detail={"n": "1"})
    report = vault.verify_audit()
    assert not report.ok and report.first_bad_seq == 1
    assert "the sealed audit head was missing when seq" in report.reason


def test_a_row_edited_outside_the_vault_is_found(backend: Backend, vault: Vault) -> None:
    link = baseline(vault)
    vault.set_state(link.id, LinkState.NEEDS_REAUTH, "refused")
    backend.sql("UPDATE links SET state = 'linked', state_reason = '' WHERE id = :i", i=link.id)
    report = vault.verify_audit()
    assert not report.ok and f"link:{link.id} is not as its last audit entry" in report.reason
    # and a row deleted outside the vault
    backend.sql("DELETE FROM secrets WHERE name = 'client'")
    report = vault.verify_audit()
    assert not report.ok and "secret:client is gone, but no audit entry deleted it" \
        in report.reason


def test_every_entry_records_its_rows(vault: Vault) -> None:
    link = baseline(vault)
    vault.replace_credential(link.id, expected_version=1, credential=refresh_credential("2"))
    vault.delete_link(link.id)
    entries = vault.audit_log()
    key = f"link:{link.id}"
    events = [(e.event, e.rows) for e in entries]
    assert [e for e, _ in events] == [AuditEvent.LINK, AuditEvent.SECRET,
                                      AuditEvent.CREDENTIAL_USE, AuditEvent.REFRESH,
                                      AuditEvent.UNLINK]
    created, secret, used, refreshed, deleted = (rows for _, rows in events)
    assert created is not None and created[key][0] is None and created[key][1] is not None
    assert secret is not None and secret["secret:client"][0] is None
    assert used == {}  # a use changes no row the log vouches for
    assert refreshed is not None and refreshed[key][0] == created[key][1]
    assert deleted is not None and deleted[key] == (refreshed[key][1], None)
    assert vault.verify_audit().ok


def test_what_the_file_alone_cannot_tell(backend: Backend, vault: Vault) -> None:
    """The documented limit: entries that changed no row (prompts, credential uses) can be cut
    behind an older head, as can anything else if every row is rolled back with them — that
    is an older copy of the whole vault, which only state kept elsewhere could reveal."""
    baseline(vault)
    keep, saved = last_seq(vault), head_value(backend)
    vault.record(AuditEvent.PROMPT, target="matrix", detail={"face": "cli"})
    cut(backend, keep, saved)
    report = vault.verify_audit()
    assert report.ok and report.entries == keep
