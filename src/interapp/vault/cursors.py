"""Where each target's event stream stands: the cursor to resume after, per local account.

Theory of operation
-------------------
A host saves the cursor of a target's stream once every subscriber has handled the events
before it (:mod:`interapp.host._hub`), so it is written about once per event received. Up to
revision 0003 it was a vault *secret*: sealed, written with ``synchronous=FULL`` and recorded
in the audit chain — about 1.8 ms of CPU and an fsync per chat message, and one audit row per
message forever. A cursor is an opaque position on the server, not a credential, so it now
has a plain table of its own (revision 0004, ``stream_cursors``): one row per (local account,
target), not sealed, not audited, written with the connection's ``synchronous=NORMAL``.

What that costs: after a power cut (not a killed process: WAL survives that) the newest
cursor updates may be lost and the host resumes a little earlier; the target then hands the
same events out again, which every consumer already accepts (at-least-once delivery; the
agent's event log drops the repeats by their dedup key).

Both statements are :class:`~interapp.vault.db.Prepared` (compiled once): an update, and an
insert when no row was there yet — one short write transaction, serialised like every vault
write, so two processes never insert the same row twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import bindparam, select

from interapp.vault.db import Database, Prepared
from interapp.vault.schema import stream_cursors

__all__ = ["CursorStore"]

_WHERE = (stream_cursors.c.local_account == bindparam("account"),
          stream_cursors.c.target == bindparam("target"))
_GET = Prepared(select(stream_cursors.c.cursor).where(*_WHERE))
_UPDATE = Prepared(stream_cursors.update().where(*_WHERE)
                   .values(cursor=bindparam("cursor"), updated_at=bindparam("at")))
_INSERT = Prepared(stream_cursors.insert().values(
    local_account=bindparam("account"), target=bindparam("target"),
    cursor=bindparam("cursor"), updated_at=bindparam("at")))
_DELETE = Prepared(stream_cursors.delete().where(*_WHERE))


class CursorStore:
    """The ``stream_cursors`` table of one vault database (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, account: str, target: str) -> str | None:
        """The saved cursor of ``target`` for ``account`` (None: start from the beginning)."""
        with self._db.read() as conn:
            rows, _ = _GET.run(conn, {"account": account, "target": target})
        return str(rows[0]["cursor"]) if rows else None

    def put(self, account: str, target: str, cursor: str) -> None:
        """Save ``cursor`` as where ``target``'s stream stands for ``account``."""
        params = {"account": account, "target": target, "cursor": cursor,
                  "at": datetime.now(UTC).isoformat()}
        with self._db.write() as conn:
            _, changed = _UPDATE.run(conn, params)
            if changed == 0:
                _INSERT.run(conn, params)

    def delete(self, account: str, target: str) -> bool:
        """Forget the cursor (a new link may be to another remote account, whose events have
        positions of their own); True if there was one."""
        with self._db.write() as conn:
            _, gone = _DELETE.run(conn, {"account": account, "target": target})
        return gone > 0
