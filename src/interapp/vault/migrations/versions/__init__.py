"""Alembic revisions of the vault schema."""
