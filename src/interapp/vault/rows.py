"""Reading ``links`` rows: the prepared hot-path statements and row → :class:`Link`.

Theory of operation
-------------------
``get_link``, ``get_link_by_id`` and ``read_credential`` run on every use of a link, so their
statements are built once as :class:`~interapp.vault.db.Prepared` (compiled once per dialect,
run on the raw cursor). Timestamps are stored as ISO 8601 UTC text, identical on SQLite and
PostgreSQL, and parsed back into aware datetimes here. The credential blob is never part of a
:class:`Link`; only ``TOUCH`` (which marks the link used) returns it, to be decrypted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select

from interapp.ids import LinkId, TargetName
from interapp.vault.db import Prepared
from interapp.vault.model import Link, LinkState
from interapp.vault.schema import links

LINK_COLUMNS = [c for c in links.c if c.name != "credential"]
BY_TRIPLE = Prepared(select(*LINK_COLUMNS).where(links.c.local_app == bindparam("app"),
                                                 links.c.local_account == bindparam("account"),
                                                 links.c.target == bindparam("target")))
BY_ID = Prepared(select(*LINK_COLUMNS).where(links.c.id == bindparam("link_id")))
TOUCH = Prepared(links.update().where(links.c.id == bindparam("link_id"))
                 .values(last_used_at=bindparam("ts"))
                 .returning(links.c.credential, links.c.target))


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def link_from_row(row: Mapping[Any, Any]) -> Link:
    """A :class:`Link` from a ``links`` row (a DBAPI dict or a SQLAlchemy row mapping)."""
    return Link(id=LinkId(row["id"]), local_app=row["local_app"],
                local_account=row["local_account"], target=TargetName(row["target"]),
                target_app=row["target_app"], remote_account_id=row["remote_account_id"],
                remote_account_name=row["remote_account_name"], state=LinkState(row["state"]),
                state_reason=row["state_reason"], credential_kind=row["credential_kind"],
                created_at=datetime.fromisoformat(row["created_at"]),
                updated_at=datetime.fromisoformat(row["updated_at"]),
                last_used_at=_ts(row["last_used_at"]), version=row["version"])
