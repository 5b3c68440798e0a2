"""Idempotent refresh-token rotation (tokens.rotation_key) and the app_secrets table.

``app_secrets`` also takes over the signing key from ``signing_keys`` (dropped): one row per
name means concurrent first starts of several processes agree on one key.

A refresh presented with an ``idempotency_key`` records the key's hash on the rotated token, and
the new pair is derived from a per-application secret (``app_secrets``), so the very same retry
(a client that crashed before saving the answer) gets the very same pair back.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rotation_key", sa.String(length=64), nullable=True))
    op.create_table(
        "app_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.execute("INSERT INTO app_secrets (name, value, created_at) "
               "SELECT 'signing_jwk', private_jwk, created_at FROM signing_keys "
               "ORDER BY created_at DESC LIMIT 1")
    op.drop_table("signing_keys")


def downgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("private_jwk", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kid"),
    )
    op.drop_table("app_secrets")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("rotation_key")
