"""Alembic environment for the vault.

Theory of operation
-------------------
The vault never runs Alembic from the command line: :func:`interapp.vault.schema.ensure_schema`
builds a :class:`~alembic.config.Config` in code and passes its already-open write connection
in ``config.attributes["connection"]``. This environment just runs the migrations on that
connection (online mode only; offline SQL generation is not supported).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection


def run_migrations_online() -> None:
    """Run the pending revisions on the connection handed in by the vault."""
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("vault migrations run only through interapp.vault.schema")
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline vault migrations are not supported")
run_migrations_online()
