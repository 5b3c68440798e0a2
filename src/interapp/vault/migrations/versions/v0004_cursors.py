"""Where each target's event stream stands: ``stream_cursors``.

Theory of operation
-------------------
Up to revision 0003 a host kept each stream's cursor as a vault secret
(``cursor:TARGET:ACCOUNT``): sealed, fsynced and audited on every event received. A cursor
is a position on the server, not a credential, so it gets a plain table (see
:mod:`interapp.vault.cursors`): one row per (local account, target), neither sealed nor
audited. The old secrets cannot be read here (they are sealed with the vault key, which
migrations never see): a host moves each one into the table the first time it opens that
target's stream, and deletes the secret.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table."""
    op.create_table(
        "stream_cursors",
        sa.Column("local_account", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("cursor", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("local_account", "target", name="pk_stream_cursors"),
    )


def downgrade() -> None:
    """Drop the table (hosts then resume their streams from the start)."""
    op.drop_table("stream_cursors")
