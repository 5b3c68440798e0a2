"""Shared helpers of the vault tests (imported by ``conftest.py`` and the test modules)."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, text

from interapp.vault import Credential, Vault

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

RAW_KEY = os.urandom(32)
KEY_ENV = {"INTERAPP_VAULT_KEY": base64.urlsafe_b64encode(RAW_KEY).decode().rstrip("="),
           "INTERAPP_VAULT_KEYRING": "0"}
OTHER_KEY_ENV = {"INTERAPP_VAULT_KEY": base64.b64encode(os.urandom(32)).decode(),
                 "INTERAPP_VAULT_KEYRING": "0"}

SECRET_REFRESH = "s3cr3t-refresh-XYZ"
SECRET_PASSWORD = "p4ssw0rd-QRS-unique"
SECRET_CLIENT = "cl13nt-s3cr3t-ABC"


@dataclass
class Backend:
    """Where a test's vault lives, plus raw SQL access for tampering."""

    name: str
    location: str
    url: str

    def open(self, env: dict[str, str] | None = None, **kw: Any) -> Vault:
        """Open the vault with the test key (or ``env``)."""
        return Vault.open(self.location, env=KEY_ENV if env is None else env, **kw)

    def sql(self, statement: str, **params: Any) -> list[Any]:
        """Run one statement outside the vault, committed; rows if any."""
        engine = create_engine(self.url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(statement), params)
                return list(result) if result.returns_rows else []
        finally:
            engine.dispose()


def drop_audit_guards(backend: Backend) -> None:
    """Remove the append-only triggers, as someone editing the file would."""
    if backend.name == "sqlite":
        backend.sql("DROP TRIGGER IF EXISTS audit_no_update")
        backend.sql("DROP TRIGGER IF EXISTS audit_no_delete")
    else:
        backend.sql("ALTER TABLE audit DISABLE TRIGGER USER")


def refresh_credential(token: str = SECRET_REFRESH) -> Credential:
    """A distinctive refresh-token credential."""
    return Credential("refresh_token", {"refresh_token": token, "client_hint": "none"})


def make_link_factory(v: Vault) -> Callable[..., Any]:
    """``make(account, target, credential=...)`` creating links with sensible defaults."""

    def make(account: str = "alice", target: str = "matrix", credential: Credential | None = None,
             local_app: str = "https://home.example") -> Any:
        return v.create_link(local_app=local_app, local_account=account, target=target,
                             target_app=f"https://{target}.example",
                             remote_account_id=f"@{account}:{target}",
                             remote_account_name=account.title(),
                             credential=credential or refresh_credential())

    return make
