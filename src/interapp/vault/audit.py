"""The append-only, hash-chained audit log.

Theory of operation
-------------------
Each entry's ``hash`` is ``sha256(prev_hash || canonical JSON of [seq, at, event, link_id,
target, detail])`` in hex, and its ``prev_hash`` is the previous entry's ``hash`` (64 zeros for
seq 1). Changing, removing or reordering any entry therefore breaks every later link, and
:func:`verify` names the first entry that no longer fits. The database refuses ``UPDATE`` and
``DELETE`` on the table (triggers created by the migration) so an accident cannot rewrite
history; the chain catches deliberate edits made around the triggers.

Dropping *trailing* entries leaves a valid, shorter chain. To catch that too, every append
also stores the head ``(seq, hash)`` in ``meta`` sealed with the vault's data key; an attacker
without the key cannot forge a head for a truncated chain.

Appends happen inside the caller's write transaction (serialised, see
:mod:`interapp.vault.db`), so the entry commits or rolls back together with the change it
records. Details are short plain strings; values that look like a masked
:class:`~interapp.secret.Secret` or a :class:`~interapp.vault.model.Credential` repr are refused,
since they mean a caller tried to log secret material.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from interapp.errors import VaultError, VaultTampered
from interapp.ids import LinkId, TargetName
from interapp.secret import Secret
from interapp.vault.crypto import Cipher
from interapp.vault.db import Prepared
from interapp.vault.model import AuditEntry, AuditEvent, AuditReport, Credential
from interapp.vault.schema import audit, meta

GENESIS: Final = "0" * 64
HEAD_KEY: Final = "audit_head"
_HEAD_AAD: Final = b"interapp-vault-audit-head-v1"
_MAX_KEY: Final = 64
_MAX_VALUE: Final = 2000

# Built once: constructing Core statements costs more than running them on SQLite.
_LAST = Prepared(select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1))
_INSERT = Prepared(audit.insert().values({c.name: bindparam(c.name) for c in audit.c}))
_SET_HEAD = Prepared(meta.update().where(meta.c.key == HEAD_KEY)
                     .values(value=bindparam("head")))
_GET_HEAD = select(meta.c.value).where(meta.c.key == HEAD_KEY)


def now() -> str:
    """The current UTC time, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev_hash: str, seq: int, at: str, event: str, link_id: str | None,
               target: str | None, detail: Mapping[str, str]) -> str:
    """The chain hash of one entry."""
    body = canonical([seq, at, event, link_id, target, dict(detail)])
    return hashlib.sha256(prev_hash.encode() + body.encode()).hexdigest()


def clean_detail(detail: Mapping[str, Any] | None) -> dict[str, str]:
    """Validate an audit detail: short plain-``str`` keys and values, nothing secret-looking."""
    if detail is None:
        return {}
    out: dict[str, str] = {}
    for key, value in detail.items():
        if isinstance(value, Secret | Credential) or isinstance(key, Secret | Credential):
            raise VaultError("audit details must not contain secrets")
        if type(key) is not str or type(value) is not str:
            raise VaultError("audit detail keys and values must be plain str")
        if "**********" in value or value.startswith("Credential(") or "Secret(" in value:
            raise VaultError("audit detail value looks like secret material")
        if not key or len(key) > _MAX_KEY or len(value) > _MAX_VALUE:
            raise VaultError("audit detail key or value is empty or too long")
        out[key] = value
    return out


def append(conn: Connection, cipher: Cipher, event: AuditEvent, *, link_id: str | None = None,
           target: str | None = None, detail: Mapping[str, Any] | None = None) -> AuditEntry:
    """Add one entry inside the caller's (serialised) write transaction."""
    clean = clean_detail(detail)
    last, _ = _LAST.run(conn, {})
    seq, prev = (1, GENESIS) if not last else (last[0]["seq"] + 1, last[0]["hash"])
    at = now()
    digest = entry_hash(prev, seq, at, event.value, link_id, target, clean)
    _INSERT.run(conn, {"seq": seq, "at": at, "event": event.value, "link_id": link_id,
                           "target": target, "detail": canonical(clean), "prev_hash": prev,
                           "hash": digest})
    head = cipher.seal(f"{seq}:{digest}".encode(), _HEAD_AAD).hex()
    if _SET_HEAD.run(conn, {"head": head})[1] == 0:
        conn.execute(meta.insert().values(key=HEAD_KEY, value=head))
    return AuditEntry(seq, at, event, LinkId(link_id) if link_id else None,
                      TargetName(target) if target else None, clean, prev, digest)


def row_to_entry(row: Any) -> AuditEntry:
    """An :class:`AuditEntry` from an ``audit`` row."""
    return AuditEntry(seq=row.seq, at=row.at, event=AuditEvent(row.event),
                      link_id=LinkId(row.link_id) if row.link_id is not None else None,
                      target=TargetName(row.target) if row.target is not None else None,
                      detail=json.loads(row.detail), prev_hash=row.prev_hash, hash=row.hash)


def _head(conn: Connection, cipher: Cipher) -> tuple[int, str] | None:
    value = conn.execute(_GET_HEAD).scalar()
    if value is None:
        return None
    try:
        seq, digest = cipher.open(bytes.fromhex(value), _HEAD_AAD).decode().split(":")
    except (VaultTampered, ValueError):
        return (0, "")
    return int(seq), digest


def verify(conn: Connection, cipher: Cipher) -> AuditReport:
    """Recompute the whole chain and check it against the sealed head."""
    prev, expected_seq, count = GENESIS, 1, 0
    for row in conn.execute(select(audit).order_by(audit.c.seq)):
        count += 1
        try:
            detail = json.loads(row.detail)
            digest = entry_hash(row.prev_hash, row.seq, row.at, row.event, row.link_id,
                                row.target, detail)
        except (ValueError, TypeError):
            return AuditReport(False, count, row.seq, "entry detail is not valid JSON")
        if row.seq != expected_seq:
            return AuditReport(False, count, row.seq, f"expected seq {expected_seq}")
        if row.prev_hash != prev:
            return AuditReport(False, count, row.seq, "prev_hash does not match previous entry")
        if row.hash != digest:
            return AuditReport(False, count, row.seq, "hash does not match entry contents")
        prev, expected_seq = row.hash, expected_seq + 1
    head = _head(conn, cipher)
    if head is None and count:
        return AuditReport(False, count, 1, "sealed audit head is missing")
    if head is not None and head != (count, prev):
        seq = head[0]
        if seq <= 0:
            return AuditReport(False, count, 1, "sealed audit head does not verify")
        if seq > count:
            return AuditReport(False, count, count + 1, f"entries after seq {count} are missing")
        if seq < count:
            return AuditReport(False, count, seq + 1, f"entries after seq {seq} were not sealed")
        return AuditReport(False, count, seq, "chain was rewritten (sealed head differs)")
    return AuditReport(True, count, None, "ok")
