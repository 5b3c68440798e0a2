"""The vault's tables, and bringing a database up to the current schema.

Theory of operation
-------------------
The schema is owned by Alembic (``vault/migrations``), but importing Alembic costs far more
than opening a vault should. :func:`ensure_schema` therefore reads ``alembic_version`` with one
plain query; only when the table is missing or names an older revision does it import Alembic
and upgrade to head, inside a write transaction so two processes never migrate at once. A
revision this code does not know (a newer interapp wrote the vault) is refused.

The :class:`~sqlalchemy.Table` objects here describe the same tables for SQLAlchemy Core
queries; the migration creates them with explicit DDL so that the two cannot silently drift
(a test compares :data:`SCHEMA_REVISION` with the migration head).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from interapp.errors import VaultError
from interapp.vault.db import Database

SCHEMA_REVISION: Final = "0004"
"""The Alembic head this code reads and writes."""

KNOWN_REVISIONS: Final = ("0001", "0002", "0003", "0004")
MIGRATIONS_DIR: Final = Path(__file__).parent / "migrations"

metadata = MetaData()

meta = Table(
    "meta", metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

links = Table(
    "links", metadata,
    Column("id", Text, primary_key=True),
    Column("local_app", Text, nullable=False),
    Column("local_account", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("target_app", Text, nullable=False),
    Column("remote_account_id", Text, nullable=False),
    Column("remote_account_name", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("state_reason", Text, nullable=False),
    Column("credential_kind", Text, nullable=False),
    Column("credential", LargeBinary, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("last_used_at", Text, nullable=True),
    Column("version", Integer, nullable=False),
    UniqueConstraint("local_app", "local_account", "target", name="uq_links_triple"),
)

secrets = Table(
    "secrets", metadata,
    Column("name", Text, primary_key=True),
    Column("blob", LargeBinary, nullable=False),
    Column("updated_at", Text, nullable=False),
)

audit = Table(
    "audit", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", Text, nullable=False),
    Column("event", Text, nullable=False),
    Column("link_id", Text, nullable=True),
    Column("target", Text, nullable=True),
    Column("detail", Text, nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
    Column("rows", Text, nullable=True),
)

#: The local user's persons (revision 0003; see :mod:`interapp.vault.people`).
people = Table(
    "people", metadata,
    Column("id", Text, primary_key=True),
    Column("local_app", Text, nullable=False),
    Column("local_account", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Index("ix_people_owner", "local_app", "local_account"),
)

person_accounts = Table(
    "person_accounts", metadata,
    Column("person_id", Text, ForeignKey("people.id", ondelete="CASCADE"), nullable=False),
    Column("local_app", Text, nullable=False),
    Column("local_account", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("user", Text, nullable=False),
    Column("position", Integer, nullable=False),
    Column("added_at", Text, nullable=False),
    UniqueConstraint("local_app", "local_account", "target", "user", name="uq_person_accounts"),
    Index("ix_person_accounts_person", "person_id"),
)

account_activity = Table(
    "account_activity", metadata,
    Column("local_app", Text, nullable=False),
    Column("local_account", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("user", Text, nullable=False),
    Column("at", Text, nullable=False),
    Column("how", Text, nullable=False),
    PrimaryKeyConstraint("local_app", "local_account", "target", "user",
                         name="pk_account_activity"),
)

#: Where each target's event stream stands (revision 0004; see :mod:`interapp.vault.cursors`).
stream_cursors = Table(
    "stream_cursors", metadata,
    Column("local_account", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("cursor", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    PrimaryKeyConstraint("local_account", "target", name="pk_stream_cursors"),
)


def current_revision(db: Database) -> str | None:
    """The stored Alembic revision, or ``None`` for an empty database."""
    try:
        with db.read() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except VaultError:  # no alembic_version table: an empty database
        return None


def ensure_schema(db: Database) -> None:
    """Create or upgrade the schema if needed; cheap when it is current."""
    revision = current_revision(db)
    if revision == SCHEMA_REVISION:
        return
    if revision is not None and revision not in KNOWN_REVISIONS:
        raise VaultError(f"the vault schema ({revision}) is newer than this interapp")
    from alembic import command
    from alembic.config import Config

    with db.write() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, SCHEMA_REVISION)
