"""The host's link vault: encrypted links, credentials and secrets with a hash-chained audit log.

Theory of operation
-------------------
:class:`Vault` (``store``) is the only entry point the host needs: ``Vault.open(path_or_url)``
gives a synchronous store on SQLite or PostgreSQL. Values are in ``model``; envelope encryption
in ``crypto``; master-key sources (environment, OS keyring, passphrase) in ``keys``; the audit
chain in ``audit``; tables and Alembic-driven schema upgrades in ``schema`` and ``migrations``.
"""

from typing import TYPE_CHECKING, Any

from interapp.vault.model import (
    AuditEntry,
    AuditEvent,
    AuditReport,
    Credential,
    Link,
    LinkState,
)

if TYPE_CHECKING:
    from interapp.vault.aio import AsyncVault
    from interapp.vault.keys import KdfParams, KeySource, derive_key, resolve_master_key
    from interapp.vault.store import StaleVersion, Vault

# The store (SQLAlchemy, cryptography) is imported on first use, so that importing the light
# value types (``Credential``, ``LinkState`` …) — as every plug-in does — stays cheap.
_LAZY = {"AsyncVault": "aio", "KdfParams": "keys", "KeySource": "keys", "derive_key": "keys",
         "resolve_master_key": "keys", "StaleVersion": "store", "Vault": "store"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'interapp.vault' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"interapp.vault.{module}"), name)


__all__ = [
    "AsyncVault",
    "AuditEntry",
    "AuditEvent",
    "AuditReport",
    "Credential",
    "KdfParams",
    "KeySource",
    "Link",
    "LinkState",
    "StaleVersion",
    "Vault",
    "derive_key",
    "resolve_master_key",
]
