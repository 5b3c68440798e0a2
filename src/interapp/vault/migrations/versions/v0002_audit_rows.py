"""The audit log vouches for the rows it describes: ``audit.rows``.

Theory of operation
-------------------
Adds the nullable text column ``audit.rows``. Entries written from this revision on carry a
canonical JSON object naming the ``links``/``secrets`` rows they changed and a digest of each
row's new contents (``null`` for a deleted row; ``{}`` when no row changed), and the chain hash
covers it (see :mod:`interapp.vault.audit`). Older entries keep ``NULL`` and their old hash.

Adding a column fires no row trigger, so the append-only guards of 0001 stay as they are. The
first time the vault is opened with its key after this upgrade, it appends one ``anchor`` entry
recording every existing row (:func:`interapp.vault.audit.anchor`); a migration cannot, as it
has no key to seal the head with.

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
    """Add ``audit.rows``."""
    op.add_column("audit", sa.Column("rows", sa.Text, nullable=True))


def downgrade() -> None:
    """Drop ``audit.rows`` — refused once an entry uses it (its hash covers the column)."""
    bound = op.get_bind().execute(sa.text("SELECT 1 FROM audit WHERE rows IS NOT NULL LIMIT 1"))
    if bound.first() is not None:
        raise RuntimeError("the vault's audit log already binds rows (revision 0002 entries); "
                           "downgrading would make it unverifiable")
    op.drop_column("audit", "rows")
