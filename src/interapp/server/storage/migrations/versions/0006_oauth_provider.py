"""The authorization server side of OAuth 2.0 and OpenID Connect.

* ``clients`` gains its redirect URIs (JSON list), its allowed grant types (JSON list; NULL for
  the clients made before, which keep exactly the grants they had) and the algorithm of its ID
  tokens (NULL: ES256, the app's key).
* ``app_policy``: per-application switches (``password_grant`` = ``on``/``off``).
* ``authorization_codes`` (RFC 6749 §4.1 + RFC 7636): hashed, 60 s, single use; the family
  issued from a code is kept so that a replay revokes it.
* ``device_codes`` (RFC 8628): hashed device code, the user code typed on ``/device``, the
  polling interval and the last poll (``slow_down``).
* ``browser_sessions``: who signed in on the authorization pages (hashed cookie).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("redirect_uris", sa.Text(), nullable=False,
                                      server_default="[]"))
        batch_op.add_column(sa.Column("grant_types", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("id_token_alg", sa.String(length=8), nullable=True))
    op.create_table(
        "app_policy",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "authorization_codes",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("redirect_uri", sa.String(length=2048), nullable=False),
        sa.Column("redirect_given", sa.Boolean(), nullable=False),
        sa.Column("scope", sa.String(length=256), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        sa.Column("nonce", sa.String(length=512), nullable=True),
        sa.Column("auth_time", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("used_at", sa.Float(), nullable=True),
        sa.Column("family_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("hash"),
    )
    op.create_index("ix_authorization_codes_expires", "authorization_codes", ["expires_at"])
    op.create_table(
        "device_codes",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("user_code", sa.String(length=16), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("auth_time", sa.Float(), nullable=True),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("last_poll_at", sa.Float(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("family_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("hash"),
        sa.UniqueConstraint("user_code", name="uq_device_codes_user_code"),
    )
    op.create_index("ix_device_codes_expires", "device_codes", ["expires_at"])
    op.create_table(
        "browser_sessions",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("auth_time", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("hash"),
    )
    op.create_index("ix_browser_sessions_expires", "browser_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_browser_sessions_expires", table_name="browser_sessions")
    op.drop_table("browser_sessions")
    op.drop_index("ix_device_codes_expires", table_name="device_codes")
    op.drop_table("device_codes")
    op.drop_index("ix_authorization_codes_expires", table_name="authorization_codes")
    op.drop_table("authorization_codes")
    op.drop_table("app_policy")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("id_token_alg")
        batch_op.drop_column("grant_types")
        batch_op.drop_column("redirect_uris")
