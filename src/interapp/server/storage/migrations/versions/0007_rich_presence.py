"""Rich presence and invites.

* ``users.activity``: the account's activity (``interapp.presence.Activity`` as JSON), NULL
  when none; shown beside the presence in ``/v1/me``, ``/v1/contacts`` and ``presence`` events.
* ``invites``: an invitation from one buddy to another to join an activity or a link; pending
  until accepted, declined or past ``expires_at``; ``(sender_id, client_invite_id)`` is unique,
  so a retried invite is the same invite; ``(state, expires_at)`` serves the expiry sweep.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("activity", sa.Text(), nullable=True))
    op.create_table(
        "invites",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("sender_id", sa.String(length=32), nullable=False),
        sa.Column("recipient_id", sa.String(length=32), nullable=False),
        sa.Column("client_invite_id", sa.String(length=128), nullable=False),
        sa.Column("activity", sa.Text(), nullable=True),
        sa.Column("join_url", sa.String(length=2048), nullable=True),
        sa.Column("message", sa.String(length=500), server_default="", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("answered_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["sender_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["recipient_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sender_id", "client_invite_id", name="uq_invites_sender_client"),
    )
    op.create_index("ix_invites_recipient_state", "invites", ["recipient_id", "state"])
    op.create_index("ix_invites_sender_state", "invites", ["sender_id", "state"])
    op.create_index("ix_invites_state_expires", "invites", ["state", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_invites_state_expires", table_name="invites")
    op.drop_index("ix_invites_sender_state", table_name="invites")
    op.drop_index("ix_invites_recipient_state", table_name="invites")
    op.drop_table("invites")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("activity")
