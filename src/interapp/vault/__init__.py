"""The host's link vault: encrypted links, credentials and secrets with a hash-chained audit log.

Theory of operation
-------------------
:class:`Vault` (``store``) is the only entry point the host needs: ``Vault.open(path_or_url)``
gives a synchronous store on SQLite or PostgreSQL. Values are in ``model``; envelope encryption
in ``crypto``; master-key sources (environment, OS keyring, passphrase) in ``keys``; the audit
chain in ``audit``; tables and Alembic-driven schema upgrades in ``schema`` and ``migrations``.
"""

from interapp.vault.keys import KdfParams, KeySource, derive_key, resolve_master_key
from interapp.vault.model import (
    AuditEntry,
    AuditEvent,
    AuditReport,
    Credential,
    Link,
    LinkState,
)
from interapp.vault.store import StaleVersion, Vault

__all__ = [
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
