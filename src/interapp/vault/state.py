"""Digests of the rows the audit log vouches for (``links`` and ``secrets``).

Theory of operation
-------------------
Every audit entry written since vault revision 0002 names the rows it changed and a digest of
each row's new contents (``audit.rows``, covered by the chain hash, the chain bound by the
sealed head). Replaying the entries in order gives, for every row, the digest it must have
*now*; :func:`current` computes the digests of the rows actually there. Dropping trailing
entries and putting back an older sealed head therefore leaves rows that are newer than the
log, and :func:`compare` says which.

A row's digest is SHA-256 over a canonical list of its columns (the credential/secret blob in
hex), tagged with the table name. ``links.last_used_at`` is left out: it changes on every use,
also when the caller asks for no audit entry. No key is involved: the digests only need to be
collision resistant, their authenticity comes from the sealed head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from interapp.vault.db import Prepared
from interapp.vault.schema import links, secrets

#: The ``links`` columns a digest covers, in order (every column but ``last_used_at``).
LINK_DIGEST_COLUMNS: Final = tuple(c.name for c in links.c if c.name != "last_used_at")
SECRET_DIGEST_COLUMNS: Final = ("name", "blob", "updated_at")
_BLOBS: Final = frozenset({"credential", "blob"})

FULL_LINK = Prepared(select(*links.c).where(links.c.id == bindparam("link_id")))


def link_key(link_id: str) -> str:
    """The ``audit.rows`` key of a link row."""
    return f"link:{link_id}"


def secret_key(name: str) -> str:
    """The ``audit.rows`` key of a secret row."""
    return f"secret:{name}"


def _digest(table: str, columns: tuple[str, ...], row: Mapping[Any, Any]) -> str:
    values = [bytes(row[c]).hex() if c in _BLOBS else row[c] for c in columns]
    body = json.dumps([table, *values], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def link_digest(row: Mapping[Any, Any]) -> str:
    """The digest of a full ``links`` row (a DBAPI dict or a SQLAlchemy row mapping)."""
    return _digest("links", LINK_DIGEST_COLUMNS, row)


def secret_digest(row: Mapping[Any, Any]) -> str:
    """The digest of a ``secrets`` row."""
    return _digest("secrets", SECRET_DIGEST_COLUMNS, row)


def change(key: str, digest: Callable[[Mapping[Any, Any]], str],
           before: Mapping[Any, Any] | None,
           after: Mapping[Any, Any] | None) -> dict[str, tuple[str | None, str | None]]:
    """The ``audit.rows`` of one row going from ``before`` to ``after`` (``None``: no row)."""
    return {key: (None if before is None else digest(before),
                  None if after is None else digest(after))}


def current(conn: Connection) -> dict[str, str]:
    """The digest of every ``links`` and ``secrets`` row now in the database, by row key."""
    out = {link_key(r["id"]): link_digest(r)
           for r in (row._mapping for row in conn.execute(select(*links.c)))}
    for row in conn.execute(select(*secrets.c)):
        out[secret_key(row.name)] = secret_digest(row._mapping)
    return out


def compare(expected: Mapping[str, tuple[str | None, int]], now: Mapping[str, str]) -> str | None:
    """Why the rows are not as the log says (the earliest-logged row first), or ``None``.

    ``expected`` maps each row key to ``(digest, or None once deleted; seq of the entry that
    said so)``, as replayed from the log; ``now`` is :func:`current`.
    """
    problems: list[tuple[int, str]] = []
    for key, digest in now.items():
        said = expected.get(key)
        if said is None:
            problems.append((0, f"{key} is in the vault but not in the audit log"))
        elif said[0] is None:
            problems.append((said[1], f"{key} was deleted at seq {said[1]} but is back"))
        elif said[0] != digest:
            problems.append((said[1], f"{key} is not as its last audit entry (seq {said[1]}) "
                                      "left it"))
    for key, (was, seq) in expected.items():
        if was is not None and key not in now:
            problems.append((seq, f"{key} is gone, but no audit entry deleted it"))
    return min(problems)[1] if problems else None
