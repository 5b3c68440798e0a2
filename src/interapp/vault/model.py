"""The vault's value types: links, credentials and audit entries.

Theory of operation
-------------------
A :class:`Link` ties one local account (``local_app`` + ``local_account``) to one account on a
target application. It is plain metadata and holds no secret, so it may be logged and shown.
The secret material lives in a :class:`Credential`, which the vault stores only encrypted and
hands out only through :meth:`interapp.vault.Vault.read_credential`. A credential's ``repr``,
``str`` and even the ``repr`` of its ``fields`` mapping show field *names* only, never values,
and it refuses to be pickled, in the manner of :class:`interapp.secret.Secret`.

Every change is also written to an append-only, hash-chained audit log
(:class:`AuditEntry`); :class:`AuditReport` is the result of checking that chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from interapp.host.lifecycle import LinkState
from interapp.ids import LinkId, TargetName
from interapp.plugins.contract import Credential

__all__ = ["AuditEntry", "AuditEvent", "AuditReport", "Credential", "Link", "LinkState"]


class AuditEvent(StrEnum):
    """What an audit entry records."""

    LINK = "link"
    PROMPT = "prompt"
    CREDENTIAL_USE = "credential_use"
    REFRESH = "refresh"
    REAUTH = "reauth"
    STATE = "state"
    UNLINK = "unlink"
    SECRET = "secret"
    ANCHOR = "anchor"
    """Every link and secret as they stood when the log began to vouch for rows (once)."""


@dataclass(frozen=True)
class Link:
    """A stored link from a local account to a remote account. Holds no secret."""

    id: LinkId
    local_app: str
    local_account: str
    target: TargetName
    target_app: str
    remote_account_id: str
    remote_account_name: str
    state: LinkState
    state_reason: str
    credential_kind: str
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None
    version: int


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the append-only audit log."""

    seq: int
    at: str
    event: AuditEvent
    link_id: LinkId | None
    target: TargetName | None
    detail: Mapping[str, str]
    prev_hash: str
    hash: str
    rows: Mapping[str, tuple[str | None, str | None]] | None = None
    """The rows this entry changed → digests of their contents before and after (``None``: no
    row); ``None`` for entries written before vault revision 0002."""

    @property
    def at_datetime(self) -> datetime:
        """``at`` parsed as an aware :class:`datetime`."""
        return datetime.fromisoformat(self.at)


@dataclass(frozen=True)
class AuditReport:
    """The result of :meth:`interapp.vault.Vault.verify_audit`."""

    ok: bool
    entries: int
    first_bad_seq: int | None
    reason: str
