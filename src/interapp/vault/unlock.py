"""Unlocking a vault: turning the master key into the data-key :class:`Cipher`.

Theory of operation
-------------------
An existing vault's ``meta`` table holds the wrapped data key (``dek``), the KDF parameters
(``kdf``) and the name of the key source it was created with (``key_source``). :func:`unlock`
resolves a master key (:mod:`interapp.vault.keys`) and unwraps the data key; a key that does
not fit raises :class:`~interapp.errors.VaultLocked` naming both sources involved.

A new vault has no ``dek`` yet. A fresh salt and data key are made and the master key is
resolved *before* any lock is taken (a passphrase prompt may take minutes); the rows are then
inserted in one durable write transaction. If another process initialised the vault in the
meantime, the loop starts again and unlocks that vault instead.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping

from sqlalchemy import select

from interapp.errors import VaultError, VaultLocked
from interapp.vault.audit import now
from interapp.vault.crypto import Cipher, new_key, unwrap_data_key, wrap_data_key
from interapp.vault.db import Database
from interapp.vault.keys import KdfParams, KeyRequest, default_sources, resolve
from interapp.vault.schema import meta

FORMAT = "1"


def load_meta(db: Database) -> dict[str, str]:
    """All ``meta`` rows as a dict."""
    with db.read() as conn:
        return {row.key: row.value for row in conn.execute(select(meta.c.key, meta.c.value))}


def unlock(db: Database, env: Mapping[str, str],
           passphrase: Callable[[], str] | None) -> tuple[Cipher, str]:
    """``(cipher, key source name)`` for the vault, initialising a new one."""
    sources = default_sources(env, passphrase)
    for _attempt in range(3):
        rows = load_meta(db)
        if "dek" in rows:
            if rows.get("format") != FORMAT:
                raise VaultError(f"unsupported vault format {rows.get('format')!r}")
            request = KeyRequest(KdfParams.from_json(rows["kdf"]), db.location, creating=False)
            key, source = resolve(request, sources)
            try:
                data_key = unwrap_data_key(key, base64.b64decode(rows["dek"]))
            except VaultLocked:
                created = rows.get("key_source", "?")
                raise VaultLocked(
                    f"the vault key does not open this vault (key from {source}; "
                    f"the vault was created with a key from {created})"
                ) from None
            return Cipher(data_key), source
        kdf = KdfParams.new()
        key, source = resolve(KeyRequest(kdf, db.location, creating=True), sources)
        data_key = new_key()
        with db.write(durable=True) as conn:
            if conn.execute(select(meta.c.key).where(meta.c.key == "dek")).first() is not None:
                continue
            values = {"format": FORMAT, "kdf": kdf.to_json(), "key_source": source,
                      "dek": base64.b64encode(wrap_data_key(key, data_key)).decode(),
                      "created_at": now()}
            conn.execute(meta.insert(), [{"key": k, "value": v} for k, v in values.items()])
        db.tighten()
        return Cipher(data_key), source
    raise VaultError("could not initialise the vault (concurrent creators)")
