"""Revocations reach open event streams (issue 16, item 2).

``revocations``: one row per account whose tokens were revoked (RFC 7009, ``admin revoke``,
``admin set-password``, refresh-token reuse), written in the revoking transaction. Every server
process polls the recent rows and makes that account's open streams check their credential
again. ``event_tickets.token_hash``: the access token a ticket was minted with, so that a
stream opened with the ticket closes when that token is revoked.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revocations",
        # INTEGER PRIMARY KEY on SQLite: the rowid, so it counts up by itself there too
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_revocations_created", "revocations", ["created_at"])
    with op.batch_alter_table("event_tickets") as batch:
        batch.add_column(sa.Column("token_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("event_tickets") as batch:
        batch.drop_column("token_hash")
    op.drop_index("ix_revocations_created", table_name="revocations")
    op.drop_table("revocations")
