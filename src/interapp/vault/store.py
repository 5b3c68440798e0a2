"""The host's link vault: links, their encrypted credentials, secrets and the audit log.

Theory of operation
-------------------
:meth:`Vault.open` makes the database (:mod:`~interapp.vault.db`), brings the schema to the
current revision (:mod:`~interapp.vault.schema`, cheap when nothing is to do) and unlocks the
data key (:mod:`~interapp.vault.unlock`). Every method is then one short transaction.

Credentials are sealed with the data key and bound to their link id; secrets to their name
(:mod:`~interapp.vault.crypto`). Each change appends an audit entry in the *same* transaction
(:mod:`~interapp.vault.audit`), so the log and the data never disagree; the entry names the
row it changed and a digest of its new contents (:mod:`~interapp.vault.state`), which is what
lets :meth:`Vault.verify_audit` notice a log cut short behind an older sealed head.

:meth:`Vault.replace_credential` is a compare-and-swap on the link's ``version``: only the
writer that read the current version wins, the other gets :class:`StaleVersion` and must
re-read. Credential changes are *durable* writes (fsync'd on SQLite), so a rotated refresh
token is on disk before the caller may use it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from interapp.errors import NotFoundError, VaultError
from interapp.ids import LinkId
from interapp.secret import Secret
from interapp.vault import audit as _audit
from interapp.vault import state as _state
from interapp.vault.crypto import Cipher, link_aad, secret_aad
from interapp.vault.cursors import CursorStore
from interapp.vault.db import Database
from interapp.vault.model import AuditEntry, AuditEvent, AuditReport, Credential, Link, LinkState
from interapp.vault.people import PeopleStore
from interapp.vault.rows import BY_ID, BY_TRIPLE, LINK_COLUMNS, TOUCH, link_from_row
from interapp.vault.schema import audit as audit_table
from interapp.vault.schema import ensure_schema, links, secrets
from interapp.vault.unlock import unlock

_now = _audit.now
_append = _audit.append


class StaleVersion(VaultError):
    """Another writer changed the credential first (compare-and-swap lost)."""

    code = "vault_stale"


def _check_credential(credential: object) -> Credential:
    if not isinstance(credential, Credential):
        raise VaultError("credential must be a Credential")
    return credential


class Vault:
    """The encrypted store of the host's links. Use :meth:`open`; close when done."""

    def __init__(self, db: Database, cipher: Cipher, key_source: str) -> None:
        self._database: Database | None = db
        self._location = db.location
        self._cipher = cipher
        self.key_source = key_source
        """Where this session's master key came from (``env-raw``, ``keyring``, ...)."""

    @classmethod
    def open(cls, url_or_path: str | Path, *, env: Mapping[str, str] | None = None,
             passphrase: Callable[[], str] | None = None) -> Vault:
        """Open (creating if needed) the vault at a SQLite path or a PostgreSQL URL."""
        db = Database(url_or_path)
        try:
            ensure_schema(db)
            db.tighten()
            cipher, source = unlock(db, os.environ if env is None else env, passphrase)
            _audit.anchor(db, cipher)
        except BaseException:
            db.dispose()
            raise
        return cls(db, cipher, source)

    @property
    def location(self) -> str:
        """The SQLite file path, or the database URL without password."""
        return self._location

    @property
    def _db(self) -> Database:
        if self._database is None:
            raise VaultError("the vault is closed")
        return self._database

    def close(self) -> None:
        """Release the database connections; the vault cannot be used afterwards."""
        if self._database is not None:
            self._database.dispose()
            self._database = None

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Vault({self._location!r})"

    @property
    def cursors(self) -> CursorStore:
        """Where each target's event stream stands (see :mod:`.cursors`)."""
        return CursorStore(self._db)

    @property
    def people(self) -> PeopleStore:
        """The local user's persons in this vault's database (see :mod:`.people`)."""
        return PeopleStore(self._db)

    # --- links -------------------------------------------------------------------------------

    @staticmethod
    def _full_row(conn: Connection, link_id: str) -> dict[str, Any]:
        """Every column of the link (the credential blob too), inside the write transaction."""
        rows, _ = _state.FULL_LINK.run(conn, {"link_id": link_id})
        if not rows:
            raise NotFoundError(f"no link {link_id!r} in the vault")
        return rows[0]

    @staticmethod
    def _touched(link_id: str, before: Mapping[str, Any] | None,
                 after: Mapping[str, Any] | None) -> _audit.Rows:
        """The ``rows`` of an audit entry changing one link from ``before`` to ``after``."""
        return _state.change(_state.link_key(link_id), _state.link_digest, before, after)

    def get_link(self, local_app: str, local_account: str, target: str) -> Link | None:
        """The link of one local account to one target, or ``None``."""
        params = {"app": local_app, "account": local_account, "target": target}
        with self._db.read() as conn:
            rows, _ = BY_TRIPLE.run(conn, params)
        return link_from_row(rows[0]) if rows else None

    def get_link_by_id(self, link_id: str) -> Link | None:
        """The link with this id, or ``None``."""
        with self._db.read() as conn:
            rows, _ = BY_ID.run(conn, {"link_id": link_id})
        return link_from_row(rows[0]) if rows else None

    def list_links(self, local_app: str | None = None,
                   local_account: str | None = None) -> list[Link]:
        """All links, optionally of one local app and/or account, in a stable order."""
        query = select(*LINK_COLUMNS)
        if local_app is not None:
            query = query.where(links.c.local_app == local_app)
        if local_account is not None:
            query = query.where(links.c.local_account == local_account)
        query = query.order_by(links.c.local_app, links.c.local_account, links.c.target)
        with self._db.read() as conn:
            return [link_from_row(row._mapping) for row in conn.execute(query)]

    def create_link(self, *, local_app: str, local_account: str, target: str, target_app: str,
                    remote_account_id: str, remote_account_name: str,
                    credential: Credential) -> Link:
        """Store a new link in state ``linked``; one per (local app, account, target)."""
        credential = _check_credential(credential)
        link_id = LinkId(uuid.uuid4().hex)
        ts = _now()
        row = {"id": link_id, "local_app": local_app, "local_account": local_account,
               "target": target, "target_app": target_app,
               "remote_account_id": remote_account_id,
               "remote_account_name": remote_account_name, "state": LinkState.LINKED.value,
               "state_reason": "", "credential_kind": credential.kind,
               "credential": self._cipher.seal(credential.to_json(), link_aad(link_id)),
               "created_at": ts, "updated_at": ts, "last_used_at": None, "version": 1}
        with self._db.write(durable=True) as conn:
            taken = conn.execute(select(links.c.id).where(
                links.c.local_app == local_app, links.c.local_account == local_account,
                links.c.target == target)).first()
            if taken is not None:
                raise VaultError(f"{local_account!r} on {local_app} is already linked to "
                                 f"{target!r}")
            conn.execute(links.insert().values(row))
            _append(conn, self._cipher, AuditEvent.LINK, link_id=link_id, target=target,
                    detail={"local_app": local_app, "local_account": local_account,
                            "target_app": target_app, "remote_account_id": remote_account_id,
                            "credential_kind": credential.kind},
                    rows=self._touched(link_id, None, row))
        return link_from_row(row)

    def read_credential(self, link_id: str, *, audit: bool = True) -> Credential:
        """Decrypt a link's credential and note the use (``last_used_at``, audit entry)."""
        with self._db.write() as conn:
            rows, _ = TOUCH.run(conn, {"link_id": link_id, "ts": _now()})
            if not rows:
                raise NotFoundError(f"no link {link_id!r} in the vault")
            blob, target = rows[0]["credential"], rows[0]["target"]
            credential = Credential.from_json(self._cipher.open(blob, link_aad(link_id)))
            if audit:
                _append(conn, self._cipher, AuditEvent.CREDENTIAL_USE, link_id=link_id,
                        target=target, detail={"credential_kind": credential.kind})
        return credential

    def replace_credential(self, link_id: str, *, expected_version: int, credential: Credential,
                           event: AuditEvent = AuditEvent.REFRESH) -> Link:
        """Swap in a new credential if the link is still at ``expected_version``; durable."""
        credential = _check_credential(credential)
        blob = self._cipher.seal(credential.to_json(), link_aad(link_id))
        with self._db.write(durable=True) as conn:
            # the write lock is held: reading the version first is as good as a guarded UPDATE
            before = self._full_row(conn, link_id)
            if before["version"] != expected_version:
                raise StaleVersion(f"link {link_id} is at version {before['version']}, "
                                   f"not {expected_version}")
            after = {**before, "credential": blob, "credential_kind": credential.kind,
                     "version": expected_version + 1, "updated_at": _now()}
            conn.execute(links.update().where(links.c.id == link_id).values(
                credential=blob, credential_kind=credential.kind, version=after["version"],
                updated_at=after["updated_at"]))
            _append(conn, self._cipher, event, link_id=link_id, target=before["target"],
                    detail={"version": str(after["version"]), "credential_kind": credential.kind},
                    rows=self._touched(link_id, before, after))
        return link_from_row(after)

    def set_state(self, link_id: str, state: LinkState, reason: str = "") -> Link:
        """Record the link's health (``degraded``, ``needs_reauth``, ...)."""
        state = LinkState(state)
        if state is LinkState.UNLINKED:
            raise VaultError("a stored link cannot be 'unlinked': delete it instead")
        with self._db.write() as conn:
            before = self._full_row(conn, link_id)
            after = {**before, "state": state.value, "state_reason": reason,
                     "updated_at": _now()}
            conn.execute(links.update().where(links.c.id == link_id).values(
                state=state.value, state_reason=reason, updated_at=after["updated_at"]))
            _append(conn, self._cipher, AuditEvent.STATE, link_id=link_id,
                    target=before["target"],
                    detail={"from": before["state"], "to": state.value, "reason": reason},
                    rows=self._touched(link_id, before, after))
        return link_from_row(after)

    def repair_link(self, link_id: str, *, remote_account_id: str, remote_account_name: str,
                    credential: Credential) -> Link:
        """After re-authentication: new credential, state ``linked``, version bumped."""
        credential = _check_credential(credential)
        blob = self._cipher.seal(credential.to_json(), link_aad(link_id))
        with self._db.write(durable=True) as conn:
            before = self._full_row(conn, link_id)
            ts = _now()  # a repaired link was just used to sign in: last_used_at moves too
            changes = {"remote_account_id": remote_account_id,
                       "remote_account_name": remote_account_name, "credential": blob,
                       "credential_kind": credential.kind, "state": LinkState.LINKED.value,
                       "state_reason": "", "version": before["version"] + 1,
                       "updated_at": ts, "last_used_at": ts}
            after = {**before, **changes}
            conn.execute(links.update().where(links.c.id == link_id).values(changes))
            detail = {"version": str(after["version"]), "credential_kind": credential.kind,
                      "remote_account_id": remote_account_id, "from_state": before["state"]}
            if before["remote_account_id"] != remote_account_id:
                detail["previous_remote_account_id"] = before["remote_account_id"]
            _append(conn, self._cipher, AuditEvent.REAUTH, link_id=link_id,
                    target=before["target"], detail=detail,
                    rows=self._touched(link_id, before, after))
        return link_from_row(after)

    def delete_link(self, link_id: str, *, detail: Mapping[str, str] | None = None) -> None:
        """Destroy a link and its credential; ``detail`` (e.g. revocation result) is audited."""
        with self._db.write(durable=True) as conn:
            before = self._full_row(conn, link_id)
            conn.execute(links.delete().where(links.c.id == link_id))
            _append(conn, self._cipher, AuditEvent.UNLINK, link_id=link_id,
                    target=before["target"],
                    detail={"remote_account_id": before["remote_account_id"], **(detail or {})},
                    rows=self._touched(link_id, before, None))

    # --- audit -------------------------------------------------------------------------------

    def record(self, event: AuditEvent, *, link_id: str | None = None, target: str | None = None,
               detail: Mapping[str, str] | None = None) -> AuditEntry:
        """Append an audit entry (e.g. ``PROMPT``); detail values must be plain strings."""
        clean = _audit.clean_detail(detail)
        with self._db.write() as conn:
            return _append(conn, self._cipher, AuditEvent(event), link_id=link_id,
                           target=target, detail=clean)

    def audit_log(self, link_id: str | None = None) -> list[AuditEntry]:
        """The audit entries, oldest first, optionally of one link only."""
        query = select(audit_table).order_by(audit_table.c.seq)
        if link_id is not None:
            query = query.where(audit_table.c.link_id == link_id)
        with self._db.read() as conn:
            return [_audit.row_to_entry(row) for row in conn.execute(query)]

    def verify_audit(self) -> AuditReport:
        """Recompute the hash chain and report the first entry that does not fit."""
        with self._db.read() as conn:
            return _audit.verify(conn, self._cipher)

    # --- the host's own secrets --------------------------------------------------------------

    def put_secret(self, name: str, value: Secret) -> None:
        """Store (or replace) a named secret, e.g. the host's client secret."""
        if not isinstance(value, Secret) or not name:
            raise VaultError("put_secret needs a name and a Secret")
        blob = self._cipher.seal(value.reveal().encode(), secret_aad(name))
        row = {"name": name, "blob": blob, "updated_at": _now()}
        with self._db.write(durable=True) as conn:
            before = self._secret_row(conn, name)
            if before is None:
                conn.execute(secrets.insert().values(row))
            else:
                conn.execute(secrets.update().where(secrets.c.name == name)
                             .values(blob=blob, updated_at=row["updated_at"]))
            _append(conn, self._cipher, AuditEvent.SECRET, detail={"name": name, "action": "put"},
                    rows=self._secret_touched(name, before, row))

    @staticmethod
    def _secret_row(conn: Connection, name: str) -> dict[str, Any] | None:
        found = conn.execute(select(*secrets.c).where(secrets.c.name == name)).first()
        return None if found is None else dict(found._mapping)

    @staticmethod
    def _secret_touched(name: str, before: Mapping[str, Any] | None,
                        after: Mapping[str, Any] | None) -> _audit.Rows:
        return _state.change(_state.secret_key(name), _state.secret_digest, before, after)

    def get_secret(self, name: str) -> Secret | None:
        """The named secret, or ``None``."""
        with self._db.read() as conn:
            blob = conn.execute(select(secrets.c.blob).where(secrets.c.name == name)).scalar()
        if blob is None:
            return None
        return Secret(self._cipher.open(blob, secret_aad(name)).decode())

    def delete_secret(self, name: str) -> bool:
        """Remove a named secret; ``True`` if it existed."""
        with self._db.write(durable=True) as conn:
            before = self._secret_row(conn, name)
            if before is None:
                return False
            conn.execute(secrets.delete().where(secrets.c.name == name))
            _append(conn, self._cipher, AuditEvent.SECRET,
                    detail={"name": name, "action": "delete"},
                    rows=self._secret_touched(name, before, None))
            return True
