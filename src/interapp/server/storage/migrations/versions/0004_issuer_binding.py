"""Trusted issuers may be allowed to sign in to local accounts; unbounded JWT ids are dropped.

``trusted_issuers.may_sign_in_local_accounts`` (off by default): an RFC 7523 assertion signs in
only to the account its issuer created here (``users.external_issuer``), and to this
application's own accounts only where the operator said so (``admin trust-issuer …
--may-sign-in-local-accounts``).

Rows of ``used_assertions`` whose expiry is out of any assertion's reach (an ``exp`` of
``Infinity`` or ``NaN`` accepted before the claims were bounded) would never be swept: they are
deleted. Such assertions are refused by their claims now, so nothing can be replayed.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: Any accepted assertion expires within this many seconds (1 h lifetime + leeway, doubled).
REACH = 2 * (3600 + 60)


def upgrade() -> None:
    with op.batch_alter_table("trusted_issuers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("may_sign_in_local_accounts", sa.Boolean(),
                                      nullable=False, server_default=sa.false()))
    # PostgreSQL sorts NaN above every number, so this takes Infinity and NaN alike
    op.execute(sa.text("DELETE FROM used_assertions WHERE expires_at > :reach")
               .bindparams(reach=time.time() + REACH))


def downgrade() -> None:
    with op.batch_alter_table("trusted_issuers", schema=None) as batch_op:
        batch_op.drop_column("may_sign_in_local_accounts")
