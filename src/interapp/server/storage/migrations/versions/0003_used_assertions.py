"""Replay protection for JWT-bearer assertions (RFC 7523 §3, item 7).

An assertion carrying a ``jti`` is accepted once: its ``(issuer, jti)`` is kept until the
assertion expires, and a second presentation is ``invalid_grant``.

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
    op.create_table(
        "used_assertions",
        sa.Column("issuer", sa.String(length=512), nullable=False),
        sa.Column("jti", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti"),
    )
    op.create_index("ix_used_assertions_expires", "used_assertions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_used_assertions_expires", table_name="used_assertions")
    op.drop_table("used_assertions")
