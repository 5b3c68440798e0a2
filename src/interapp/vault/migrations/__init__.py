"""Alembic migrations of the vault schema (run by :func:`interapp.vault.schema.ensure_schema`)."""
