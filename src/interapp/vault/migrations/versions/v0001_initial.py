"""Initial vault schema: meta, links, secrets and the append-only audit log.

Theory of operation
-------------------
Creates the four tables and makes ``audit`` append-only: SQLite gets ``BEFORE UPDATE`` and
``BEFORE DELETE`` triggers that ``RAISE(ABORT)``; PostgreSQL gets a PL/pgSQL trigger function
that raises on ``UPDATE``/``DELETE`` (per row) and ``TRUNCATE`` (per statement).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SQLITE_TRIGGERS = (
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END",
)

_PG_TRIGGERS = (
    "CREATE FUNCTION interapp_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION 'audit log is append-only'; END $$",
    "CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit "
    "FOR EACH ROW EXECUTE FUNCTION interapp_audit_append_only()",
    "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit "
    "FOR EACH STATEMENT EXECUTE FUNCTION interapp_audit_append_only()",
)


def upgrade() -> None:
    """Create the tables and the append-only triggers."""
    op.create_table(
        "meta",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "links",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("local_app", sa.Text, nullable=False),
        sa.Column("local_account", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("target_app", sa.Text, nullable=False),
        sa.Column("remote_account_id", sa.Text, nullable=False),
        sa.Column("remote_account_name", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("state_reason", sa.Text, nullable=False),
        sa.Column("credential_kind", sa.Text, nullable=False),
        sa.Column("credential", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.Column("last_used_at", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.UniqueConstraint("local_app", "local_account", "target", name="uq_links_triple"),
    )
    op.create_table(
        "secrets",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("link_id", sa.Text, nullable=True),
        sa.Column("target", sa.Text, nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.Text, nullable=False),
        sa.Column("hash", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_link_id", "audit", ["link_id"])
    dialect = op.get_bind().dialect.name
    for statement in _SQLITE_TRIGGERS if dialect == "sqlite" else _PG_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    """Drop everything (the audit log with it)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE audit")
        op.execute("DROP FUNCTION interapp_audit_append_only()")
    else:
        op.drop_table("audit")
    for table in ("secrets", "links", "meta"):
        op.drop_table(table)
