"""The append-only, hash-chained audit log, and what it vouches for.

Theory of operation
-------------------
Each entry's ``hash`` is ``sha256(prev_hash || canonical JSON of [seq, at, event, link_id,
target, detail, rows])`` in hex (entries written before vault revision 0002 have no ``rows``
and leave it out), and its ``prev_hash`` is the previous entry's ``hash`` (64 zeros for seq 1).
Changing, removing or reordering any entry therefore breaks every later link, and
:func:`verify` names the first entry that no longer fits. The database refuses ``UPDATE`` and
``DELETE`` on the table (triggers created by the migration) so an accident cannot rewrite
history; the chain catches deliberate edits made around the triggers.

Dropping *trailing* entries leaves a valid, shorter chain. Three things catch that:

* Every append stores the head ``(seq, hash)`` in ``meta``, sealed with the vault's data key:
  without the key nobody can make a head for a shorter chain.
* The head alone has no freshness: an *older* sealed head, copied back, fits the shortened
  chain. So every entry also names the ``links``/``secrets`` rows it changed, each with the
  digest of the row before and after the change (``rows``, :mod:`interapp.vault.state`).
  :func:`verify` replays them: each change must start from the row the previous entry left,
  and at the end the rows actually there must be the ones the last entries left. A shortened
  log no longer explains the rows — a link refreshed, repaired, re-stated, created or deleted
  after the cut gives it away, now and after any later change of that row. Only a rollback of
  the rows *too*, to exactly how they were at the cut — in effect an older copy of the whole
  vault — cannot be told from the file alone (see docs/host.md).
* Before each append, the stored head is checked against the log's last entry; if they differ
  (entries dropped, head missing or forged), the new head is sealed *broken*, with the reason,
  so the next legitimate write cannot paper over the cut.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from interapp.errors import VaultError, VaultTampered
from interapp.ids import LinkId, TargetName
from interapp.secret import Secret
from interapp.vault import state
from interapp.vault.crypto import Cipher
from interapp.vault.db import Database, Prepared
from interapp.vault.model import AuditEntry, AuditEvent, AuditReport, Credential
from interapp.vault.schema import SCHEMA_REVISION, audit, meta

GENESIS: Final = "0" * 64
HEAD_KEY: Final = "audit_head"
_HEAD_AAD: Final = b"interapp-vault-audit-head-v1"
_MAX_KEY: Final = 64
_MAX_VALUE: Final = 2000

Rows = Mapping[str, tuple[str | None, str | None]]
"""``audit.rows``: row key (``link:<id>``, ``secret:<name>``) → ``(digest before, digest
after)``; ``None`` where the row did not exist (created, deleted)."""

# Built once: constructing Core statements costs more than running them on SQLite.
_LAST = Prepared(select(audit.c.seq, audit.c.hash, audit.c.rows)
                 .order_by(audit.c.seq.desc()).limit(1))
# what an append needs, in one round trip: the stored head and the last entry (NULLs if none)
_TAIL = Prepared(select(
    select(meta.c.value).where(meta.c.key == HEAD_KEY).scalar_subquery().label("head"),
    select(audit.c.seq).order_by(audit.c.seq.desc()).limit(1).scalar_subquery().label("seq"),
    select(audit.c.hash).order_by(audit.c.seq.desc()).limit(1).scalar_subquery().label("hash")))
_INSERT = Prepared(audit.insert().values({c.name: bindparam(c.name) for c in audit.c}))
_SET_HEAD = Prepared(meta.update().where(meta.c.key == HEAD_KEY)
                     .values(value=bindparam("head")))


def now() -> str:
    """The current UTC time, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev_hash: str, seq: int, at: str, event: str, link_id: str | None,
               target: str | None, detail: Mapping[str, str],
               rows: Rows | None = None) -> str:
    """The chain hash of one entry (``rows`` is ``None`` for entries before revision 0002)."""
    fields: list[Any] = [seq, at, event, link_id, target, dict(detail)]
    if rows is not None:
        fields.append(dict(rows))
    return hashlib.sha256(prev_hash.encode() + canonical(fields).encode()).hexdigest()


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


@dataclass(frozen=True)
class Head:
    """The sealed head: the last entry's ``(seq, hash)``, and the first break seen, if any."""

    seq: int
    hash: str
    broken_at: int = 0
    broken: str = ""

    def seal(self, cipher: Cipher) -> str:
        """The ``meta`` value: the head encrypted and authenticated with the data key."""
        plain = f"{self.seq}:{self.hash}"
        if self.broken:
            plain += f":{self.broken_at}:{self.broken}"
        return cipher.seal(plain.encode(), _HEAD_AAD).hex()

    @classmethod
    def open(cls, cipher: Cipher, value: str) -> Head | None:
        """The head sealed in ``value``; ``None`` when it does not verify."""
        try:
            parts = cipher.open(bytes.fromhex(value), _HEAD_AAD).decode().split(":", 3)
            if len(parts) == 2:
                return cls(int(parts[0]), parts[1])
            return cls(int(parts[0]), parts[1], int(parts[2]), parts[3])
        except (VaultTampered, ValueError, IndexError):
            return None


def _check_continuity(cipher: Cipher, stored: str | None,
                      last: dict[str, Any] | None, seq: int) -> tuple[int, str]:
    """``(first bad seq, why)`` if the stored head does not fit the log's end, else ``(0, "")``.

    Run before every append, so that dropped entries stay on record even after the next write.
    """
    if stored is None:
        return (1, f"the sealed audit head was missing when seq {seq} was written") \
            if last else (0, "")
    head = Head.open(cipher, stored)
    if head is None:
        return 1, f"the sealed audit head did not verify when seq {seq} was written"
    if head.broken:
        return head.broken_at, head.broken
    last_seq = last["seq"] if last else 0
    if head.seq == last_seq and (not last or head.hash == last["hash"]):
        return 0, ""
    if head.seq > last_seq:
        return last_seq + 1, (f"entries after seq {last_seq} were missing when seq {seq} "
                              f"was written (the sealed head named seq {head.seq})")
    if head.seq < last_seq:
        return head.seq + 1, (f"entries after seq {head.seq} were not sealed when seq {seq} "
                              "was written")
    return head.seq, f"the chain was rewritten before seq {seq} was written (sealed head differs)"


def append(conn: Connection, cipher: Cipher, event: AuditEvent, *, link_id: str | None = None,
           target: str | None = None, detail: Mapping[str, Any] | None = None,
           rows: Rows | None = None) -> AuditEntry:
    """Add one entry inside the caller's (serialised) write transaction.

    ``rows`` names the ``links``/``secrets`` rows this change touched, with the digests of
    each before and after it (:mod:`interapp.vault.state`), ``None`` for no row.
    """
    clean = clean_detail(detail)
    bound = dict(rows or {})
    (tail,), _ = _TAIL.run(conn, {})
    last = tail if tail["seq"] is not None else None
    seq, prev = (1, GENESIS) if last is None else (last["seq"] + 1, last["hash"])
    broken_at, broken = _check_continuity(cipher, tail["head"], last, seq)
    at = now()
    digest = entry_hash(prev, seq, at, event.value, link_id, target, clean, bound)
    _INSERT.run(conn, {"seq": seq, "at": at, "event": event.value, "link_id": link_id,
                       "target": target, "detail": canonical(clean), "prev_hash": prev,
                       "hash": digest, "rows": canonical(bound)})
    head = Head(seq, digest, broken_at, broken).seal(cipher)
    if tail["head"] is None:
        conn.execute(meta.insert().values(key=HEAD_KEY, value=head))
    else:
        _SET_HEAD.run(conn, {"head": head})
    return AuditEntry(seq, at, event, LinkId(link_id) if link_id else None,
                      TargetName(target) if target else None, clean, prev, digest, bound)


def anchor(db: Database, cipher: Cipher) -> AuditEntry | None:
    """After the upgrade to revision 0002: one ``anchor`` entry recording every current row.

    Needed once, when the log's last entry predates ``rows`` (cheap to check on every open);
    from then on every change records its own rows.
    """
    with db.read() as conn:
        found, _ = _LAST.run(conn, {})
    if not found or found[0]["rows"] is not None:
        return None
    with db.write(durable=True) as conn:
        found, _ = _LAST.run(conn, {})
        if not found or found[0]["rows"] is not None:  # another process anchored it first
            return None
        rows = state.current(conn)
        return append(conn, cipher, AuditEvent.ANCHOR,
                      rows={key: (None, digest) for key, digest in rows.items()},
                      detail={"schema": SCHEMA_REVISION, "rows": str(len(rows))})


def _digest_or_none(value: object) -> str | None:
    if value is None or (isinstance(value, str) and len(value) == 64):
        return value
    raise ValueError("an audit row digest must be 64 hex digits or null")


def _rows(text: str | None) -> dict[str, tuple[str | None, str | None]] | None:
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("audit rows must be an object")
    out: dict[str, tuple[str | None, str | None]] = {}
    for key, pair in value.items():
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError("audit rows must map row keys to [before, after]")
        out[key] = (_digest_or_none(pair[0]), _digest_or_none(pair[1]))
    return out


def _changed_between(key: str, since: int, seq: int) -> str:
    where = f"between seq {since} and seq {seq}" if since else f"before seq {seq}"
    return (f"{key} was changed {where} without an audit entry (entries were cut out, or the "
            "row was edited outside the vault)")


def row_to_entry(row: Any) -> AuditEntry:
    """An :class:`AuditEntry` from an ``audit`` row."""
    return AuditEntry(seq=row.seq, at=row.at, event=AuditEvent(row.event),
                      link_id=LinkId(row.link_id) if row.link_id is not None else None,
                      target=TargetName(row.target) if row.target is not None else None,
                      detail=json.loads(row.detail), prev_hash=row.prev_hash, hash=row.hash,
                      rows=_rows(row.rows))


def verify(conn: Connection, cipher: Cipher) -> AuditReport:
    """Recompute the whole chain, check it against the sealed head and the rows it vouches for."""
    prev, expected_seq, count = GENESIS, 1, 0
    expected: dict[str, tuple[str | None, int]] = {}
    for row in conn.execute(select(audit).order_by(audit.c.seq)):
        count += 1
        try:
            detail = json.loads(row.detail)
            rows = _rows(row.rows)
            digest = entry_hash(row.prev_hash, row.seq, row.at, row.event, row.link_id,
                                row.target, detail, rows)
        except (ValueError, TypeError):
            return AuditReport(False, count, row.seq, "entry detail or rows are not valid")
        if row.seq != expected_seq:
            return AuditReport(False, count, row.seq, f"expected seq {expected_seq}")
        if row.prev_hash != prev:
            return AuditReport(False, count, row.seq, "prev_hash does not match previous entry")
        if row.hash != digest:
            return AuditReport(False, count, row.seq, "hash does not match entry contents")
        for key, (before, after) in sorted((rows or {}).items()):
            was = expected.get(key, (None, 0))
            if before != was[0]:
                return AuditReport(False, count, row.seq, _changed_between(key, was[1], row.seq))
            expected[key] = (after, row.seq)
        prev, expected_seq = row.hash, expected_seq + 1
    stored = conn.execute(select(meta.c.value).where(meta.c.key == HEAD_KEY)).scalar()
    if stored is None:
        if count:
            return AuditReport(False, count, 1, "sealed audit head is missing")
    else:
        head = Head.open(cipher, stored)
        if head is None:
            return AuditReport(False, count, 1, "sealed audit head does not verify")
        if head.broken:
            return AuditReport(False, count, head.broken_at, head.broken)
        if (head.seq, head.hash) != (count, prev):
            if head.seq > count:
                return AuditReport(False, count, count + 1,
                                   f"entries after seq {count} are missing")
            if head.seq < count:
                return AuditReport(False, count, head.seq + 1,
                                   f"entries after seq {head.seq} were not sealed")
            return AuditReport(False, count, head.seq, "chain was rewritten (sealed head differs)")
    why = state.compare(expected, state.current(conn))
    if why is not None:
        return AuditReport(False, count, count + 1,
                           f"the log does not account for the vault's rows: {why} (entries "
                           f"after seq {count} are missing, or a row was changed outside "
                           "the vault)")
    return AuditReport(True, count, None, "ok")
