"""The vault for asyncio code: every call runs on the vault's own thread, never on the loop.

Theory of operation
-------------------
:class:`~interapp.vault.store.Vault` is synchronous (SQLite or PostgreSQL through SQLAlchemy,
argon2 when a passphrase is stretched). :class:`AsyncVault` owns one worker thread and runs
each call there, so the event loop of the host never waits on a disk or a database. One
thread is enough — every vault method is one short transaction — and it keeps calls in the
order they were made, which an in-memory vault (one SQLite connection) needs. The same thread
runs other small blocking chores of the host (reading ``targets.toml``) through :meth:`run`.

A call whose awaiting task is cancelled still completes on the thread: a rotated refresh token
is saved even when the caller has gone.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from interapp.plugins.contract import Credential
from interapp.secret import Secret
from interapp.vault.model import AuditEntry, AuditEvent, AuditReport, Link, LinkState
from interapp.vault.store import Vault

__all__ = ["AsyncVault"]

P = ParamSpec("P")
T = TypeVar("T")


class AsyncVault:
    """A :class:`Vault` whose methods are coroutines run on one worker thread."""

    def __init__(self, vault: Vault, executor: ThreadPoolExecutor) -> None:
        self.sync = vault
        """The synchronous vault (only for code already running on the worker thread)."""
        self._executor = executor

    @classmethod
    async def open(cls, url_or_path: str | Path, *, env: Mapping[str, str] | None = None,
                   passphrase: Callable[[], str] | None = None) -> AsyncVault:
        """Open the vault (schema upgrade, unlocking) on a new worker thread."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="interapp-vault")
        loop = asyncio.get_running_loop()
        try:
            vault = await loop.run_in_executor(executor, functools.partial(
                Vault.open, url_or_path, env=env, passphrase=passphrase))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(vault, executor)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the vault's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def aclose(self) -> None:
        """Close the vault and stop its thread (after the calls already queued)."""
        await self.run(self.sync.close)
        self._executor.shutdown(wait=False)

    @property
    def location(self) -> str:
        """Where the vault lives (a path, ``:memory:`` or a URL without password)."""
        return self.sync.location

    def __repr__(self) -> str:
        return f"AsyncVault({self.sync.location!r})"

    # --- links ---------------------------------------------------------------------------

    async def get_link(self, local_app: str, local_account: str, target: str) -> Link | None:
        """See :meth:`Vault.get_link`."""
        return await self.run(self.sync.get_link, local_app, local_account, target)

    async def get_link_by_id(self, link_id: str) -> Link | None:
        """See :meth:`Vault.get_link_by_id`."""
        return await self.run(self.sync.get_link_by_id, link_id)

    async def list_links(self, local_app: str | None = None,
                         local_account: str | None = None) -> list[Link]:
        """See :meth:`Vault.list_links`."""
        return await self.run(self.sync.list_links, local_app, local_account)

    async def create_link(self, *, local_app: str, local_account: str, target: str,
                          target_app: str, remote_account_id: str, remote_account_name: str,
                          credential: Credential) -> Link:
        """See :meth:`Vault.create_link`."""
        return await self.run(functools.partial(
            self.sync.create_link, local_app=local_app, local_account=local_account,
            target=target, target_app=target_app, remote_account_id=remote_account_id,
            remote_account_name=remote_account_name, credential=credential))

    async def read_credential(self, link_id: str, *, audit: bool = True) -> Credential:
        """See :meth:`Vault.read_credential`."""
        return await self.run(functools.partial(self.sync.read_credential, link_id, audit=audit))

    async def replace_credential(self, link_id: str, *, expected_version: int,
                                 credential: Credential,
                                 event: AuditEvent = AuditEvent.REFRESH) -> Link:
        """See :meth:`Vault.replace_credential`."""
        return await self.run(functools.partial(
            self.sync.replace_credential, link_id, expected_version=expected_version,
            credential=credential, event=event))

    async def set_state(self, link_id: str, state: LinkState, reason: str = "") -> Link:
        """See :meth:`Vault.set_state`."""
        return await self.run(self.sync.set_state, link_id, state, reason)

    async def repair_link(self, link_id: str, *, remote_account_id: str,
                          remote_account_name: str, credential: Credential) -> Link:
        """See :meth:`Vault.repair_link`."""
        return await self.run(functools.partial(
            self.sync.repair_link, link_id, remote_account_id=remote_account_id,
            remote_account_name=remote_account_name, credential=credential))

    async def delete_link(self, link_id: str, *,
                          detail: Mapping[str, str] | None = None) -> None:
        """See :meth:`Vault.delete_link`."""
        await self.run(functools.partial(self.sync.delete_link, link_id, detail=detail))

    # --- audit ---------------------------------------------------------------------------

    async def record(self, event: AuditEvent, *, link_id: str | None = None,
                     target: str | None = None,
                     detail: Mapping[str, str] | None = None) -> AuditEntry:
        """See :meth:`Vault.record`."""
        return await self.run(functools.partial(self.sync.record, event, link_id=link_id,
                                                target=target, detail=detail))

    async def audit_log(self, link_id: str | None = None) -> list[AuditEntry]:
        """See :meth:`Vault.audit_log`."""
        return await self.run(self.sync.audit_log, link_id)

    async def verify_audit(self) -> AuditReport:
        """See :meth:`Vault.verify_audit`."""
        return await self.run(self.sync.verify_audit)

    # --- secrets -------------------------------------------------------------------------

    async def put_secret(self, name: str, value: Secret) -> None:
        """See :meth:`Vault.put_secret`."""
        await self.run(self.sync.put_secret, name, value)

    async def get_secret(self, name: str) -> Secret | None:
        """See :meth:`Vault.get_secret`."""
        return await self.run(self.sync.get_secret, name)

    async def delete_secret(self, name: str) -> bool:
        """See :meth:`Vault.delete_secret`."""
        return await self.run(self.sync.delete_secret, name)
