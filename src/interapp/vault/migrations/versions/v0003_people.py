"""The local user's persons: ``people``, ``person_accounts`` and ``account_activity``.

Theory of operation
-------------------
A *person* is one human the local user knows under several accounts on several targets
(``chatter:bob`` and ``xmpp:bob@example.org``). The merge is the user's own decision and
stays on this machine: these tables live beside the links in the vault's database (file,
memory or PostgreSQL alike) and nothing in interapp sends them to any server.

* ``people``: one row per person of one local account (``local_app`` + ``local_account``).
* ``person_accounts``: the (target, user) accounts of a person; an account belongs to at most
  one person of a local account (``uq_person_accounts``), which the database enforces across
  processes (the agent and a command line writing at once).
* ``account_activity``: when each buddy account was last seen active (a message from them, a
  presence change to a state other than offline), kept for every buddy so that a merge made
  later already knows where the person was last active.

Neither carries a secret, so none is sealed or audited (the audit chain vouches for
``links`` and ``secrets`` only).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the three tables."""
    op.create_table(
        "people",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("local_app", sa.Text, nullable=False),
        sa.Column("local_account", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
    )
    op.create_index("ix_people_owner", "people", ["local_app", "local_account"])
    op.create_table(
        "person_accounts",
        sa.Column("person_id", sa.Text, sa.ForeignKey("people.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("local_app", sa.Text, nullable=False),
        sa.Column("local_account", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("user", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("added_at", sa.Text, nullable=False),
        sa.UniqueConstraint("local_app", "local_account", "target", "user",
                            name="uq_person_accounts"),
    )
    op.create_index("ix_person_accounts_person", "person_accounts", ["person_id"])
    op.create_table(
        "account_activity",
        sa.Column("local_app", sa.Text, nullable=False),
        sa.Column("local_account", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("user", sa.Text, nullable=False),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("how", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("local_app", "local_account", "target", "user",
                                name="pk_account_activity"),
    )


def downgrade() -> None:
    """Drop the three tables (the merges are lost)."""
    for table in ("account_activity", "person_accounts", "people"):
        op.drop_table(table)
