"""Storage of the application server: one async interface over SQLite and PostgreSQL."""

from interapp.server.storage.db import Database, normalize_url

__all__ = ["Database", "normalize_url"]
