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

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from interapp.errors import VaultError
from interapp.ids import LinkId, TargetName
from interapp.secret import Secret, constant_time_equals


class LinkState(StrEnum):
    """The health of a link, as the host last saw it."""

    LINKED = "linked"
    DEGRADED = "degraded"
    NEEDS_REAUTH = "needs_reauth"
    REVOKED = "revoked"


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


class _HiddenFields(Mapping[str, str]):
    """A read-only mapping whose ``repr`` shows the keys only."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: '***'" for k in sorted(self._data)) + "}"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("credential fields are not picklable")


@dataclass(frozen=True, eq=False, repr=False)
class Credential:
    """The secret material of a link: a ``kind`` and named string ``fields``.

    ``kind`` names the scheme (``"refresh_token"``, ``"password"``, ``"matrix_session"``,
    ``"scram"``, ...); the fields are whatever that scheme needs. Equality is constant-time.
    """

    kind: str
    fields: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise VaultError("a credential needs a non-empty kind")
        for name, value in self.fields.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise VaultError("credential field names and values must be str")
        object.__setattr__(self, "fields", _HiddenFields(self.fields))

    def get(self, name: str) -> str | None:
        """The value of field ``name``, or ``None``."""
        return self.fields.get(name)

    def secret(self, name: str) -> Secret | None:
        """The value of field ``name`` wrapped in a :class:`Secret`, or ``None``."""
        value = self.fields.get(name)
        return None if value is None else Secret(value)

    def to_json(self) -> bytes:
        """Canonical JSON bytes (what the vault encrypts)."""
        doc = {"v": 1, "kind": self.kind, "fields": dict(self.fields)}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Credential:
        """Rebuild a credential from :meth:`to_json` output."""
        try:
            doc = json.loads(data)
            kind, fields = doc["kind"], doc["fields"]
        except (ValueError, KeyError, TypeError) as exc:
            raise VaultError("stored credential is not valid JSON") from exc
        if not isinstance(kind, str) or not isinstance(fields, dict):
            raise VaultError("stored credential has the wrong shape")
        return cls(kind=kind, fields=fields)

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.fields))
        return f"Credential(kind={self.kind!r}, fields=[{names}])"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credential):
            return NotImplemented
        return constant_time_equals(self.to_json(), other.to_json())

    def __hash__(self) -> int:
        return hash(("Credential", self.kind, tuple(sorted(self.fields))))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Credential values are not picklable")


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
