"""The host: loads and starts plug-ins, supervises them, and runs the claim-1 flow per target.

Theory of operation: :class:`Host` owns the data folder (configuration, vault, lock files), the
local session and one plug-in instance per started target. Every call into a plug-in goes through
:meth:`Host.supervised`, which bounds it in time and turns anything unexpected into
:class:`~interapp.errors.PluginCrashed` / :class:`~interapp.errors.PluginTimeout` *for that target
only*; the others keep running. :meth:`Host.watch` keeps one event stream per target alive,
reconnecting with exponential backoff and resuming from the last cursor it saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import random
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from interapp.errors import (
    ConfigError,
    ConnectionLost,
    InterappError,
    NeedsReauth,
    PluginCrashed,
    PluginTimeout,
    RateLimited,
    Unauthorized,
)
from interapp.host.config import HostConfig, LocalApp, Target
from interapp.host.driver import Connection, CredentialKeeper, HostContext, Outcome, connect_target
from interapp.host.localapp import LocalSession
from interapp.host.prompts import Prompter
from interapp.host.registry import Registry, discover
from interapp.plugins.contract import Plugin, PluginEvent, TargetConfig
from interapp.secret import Secret
from interapp.vault import AuditEvent, LinkState, Vault

T = TypeVar("T")
CALL_TIMEOUT = 30.0


def target_secret_name(target: str) -> str:
    """Vault name of a target's client secret."""
    return f"target:{target}:client_secret"


@dataclass
class WatchEvent:
    """A plug-in event, tagged with its target."""

    target: str
    event: PluginEvent


class Host:
    """The local application's plug-in runtime (see the module docstring)."""

    def __init__(self, home: Path, *, env: Mapping[str, str] | None = None,
                 interactive: bool = False, call_timeout: float = CALL_TIMEOUT) -> None:
        self.home = home
        self.env = os.environ if env is None else env
        self.config = HostConfig(home)
        self.interactive = interactive
        self.call_timeout = call_timeout
        self._registry: Registry | None = None
        self._vault: Vault | None = None
        self._local: LocalSession | None = None
        self._keeper: CredentialKeeper | None = None
        self.connections: dict[str, Connection] = {}
        self.plugins: dict[str, Plugin] = {}
        self.states: dict[str, str] = {}
        self._connecting: dict[str, asyncio.Lock] = {}

    # --- lazily opened parts ---------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """Discovered plug-ins."""
        if self._registry is None:
            self._registry = discover()
        return self._registry

    @property
    def vault(self) -> Vault:
        """The link vault (opened on first use)."""
        if self._vault is None:
            ask = None
            if self.interactive and sys.stdin is not None and sys.stdin.isatty():
                def ask() -> str:
                    return getpass.getpass("Vault passphrase: ", stream=sys.stderr)
            # a server-side host with many users may keep its vault in PostgreSQL
            location = self.env.get("INTERAPP_VAULT_DB") or self.home / "vault.db"
            self._vault = Vault.open(location, env=self.env, passphrase=ask)
        return self._vault

    @property
    def local(self) -> LocalSession:
        """The session with the local application."""
        if self._local is None:
            self._local = LocalSession(self.config.local(), self.vault)
        return self._local

    @property
    def keeper(self) -> CredentialKeeper:
        """Single-flight credential refresher."""
        if self._keeper is None:
            self._keeper = CredentialKeeper(self.vault, self.home / "locks")
        return self._keeper

    def set_local(self, local: LocalApp, client_secret: Secret | None) -> None:
        """Record which application is the local one (and its client secret, in the vault)."""
        from interapp.host.localapp import CLIENT_SECRET, SESSION

        self.config.set_local(local)
        self.vault.delete_secret(SESSION)
        if client_secret is not None:
            self.vault.put_secret(CLIENT_SECRET, client_secret)
        else:
            self.vault.delete_secret(CLIENT_SECRET)
        self._local = None

    async def login(self, username: str, password: Secret) -> dict[str, object]:
        """Log in to the local application and remember who is logged in."""
        me = await self.local.login(username, password)
        self.config.set_local(self.local.local)
        return me

    async def aclose(self) -> None:
        """Close every plug-in and connection."""
        for name, plugin in list(self.plugins.items()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(plugin.close(), 5)
            self.plugins.pop(name, None)
        if self._local is not None:
            await self._local.aclose()
        if self._vault is not None:
            self._vault.close()

    async def __aenter__(self) -> Host:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- plug-ins ----------------------------------------------------------------------------

    def target_config(self, target: Target) -> TargetConfig:
        """What the plug-in of ``target`` is given (client secret from the vault)."""
        return TargetConfig(name=target.name, plugin=target.plugin, server=target.server,
                            client_id=target.client_id,
                            client_secret=self.vault.get_secret(target_secret_name(target.name)),
                            account_system=target.account_system, tls=target.tls,
                            options=target.options)

    def start_plugin(self, target: Target) -> Plugin:
        """Load (import) and start the plug-in for ``target``."""
        if target.name in self.plugins:
            return self.plugins[target.name]
        spec = self.registry.get(target.plugin)
        try:
            cls = spec.load()
            plugin = cls(self.target_config(target))
        except InterappError:
            raise
        except Exception as exc:
            raise PluginCrashed(f"plug-in {spec.name} failed to start: "
                                f"{type(exc).__name__}: {exc}") from exc
        self.plugins[target.name] = plugin
        return plugin

    async def supervised(self, target: str, call: Awaitable[T],
                         limit: float | None = None) -> T:
        """Run one plug-in call, bounded in time, with unexpected errors contained."""
        try:
            return await asyncio.wait_for(call, limit or self.call_timeout)
        except TimeoutError as exc:
            self.states[target] = "plugin_timeout"
            raise PluginTimeout(f"{target}: the plug-in did not answer within "
                                f"{limit or self.call_timeout:.0f} s; stopped it") from exc
        except InterappError:
            raise
        except Exception as exc:
            self.states[target] = "plugin_crashed"
            raise PluginCrashed(f"{target}: the plug-in failed: {type(exc).__name__}: "
                                f"{exc}") from exc

    # --- the claim-1 flow --------------------------------------------------------------------

    async def connect(self, name: str, prompter: Prompter, *, max_attempts: int = 3) -> Outcome:
        """Connect one target through the link-or-prompt flow."""
        target = self.config.target(name)
        plugin = self.start_plugin(target)
        ctx = HostContext(self.vault, self.local, self.keeper)
        outcome = await self.supervised(name, connect_target(
            ctx, target, plugin, prompter, max_attempts=max_attempts), limit=600)
        if outcome.connection is not None:
            self.connections[name] = outcome.connection
            self.states[name] = "connected"
        return outcome

    async def connection(self, name: str, prompter: Prompter) -> Connection:
        """A live connection to ``name`` (connecting it through the same flow if needed)."""
        async with self._connecting.setdefault(name, asyncio.Lock()):
            if name in self.connections:
                return self.connections[name]
            outcome = await self.connect(name, prompter)
            if outcome.connection is None:
                assert outcome.failure is not None
                raise outcome.failure
            return outcome.connection

    async def each_target(self, names: list[str] | None, prompter: Prompter,
                          work: Callable[[Connection], Awaitable[T]]
                          ) -> dict[str, T | InterappError]:
        """Run ``work`` on every (or the named) target concurrently; failures stay per target."""
        targets = names or sorted(self.config.targets())

        async def one(name: str) -> T | InterappError:
            try:
                conn = await self.connection(name, prompter)
                return await self.supervised(name, work(conn))
            except InterappError as exc:
                return exc

        results = await asyncio.gather(*(one(n) for n in targets))
        return dict(zip(targets, results, strict=True))

    async def unlink(self, name: str) -> tuple[bool | None, str]:
        """Revoke at the target, then destroy the local credential. Returns (revoked, note).

        ``revoked`` is None when the plug-in keeps nothing the target could revoke.
        """
        local = self.config.local()
        if local.username is None:
            raise ConfigError("not logged in to the local application")
        link = self.vault.get_link(local.issuer, local.username, name)
        if link is None:
            raise ConfigError(f"no link to {name} for {local.username}")
        target = self.config.target(name)
        revoked: bool | None = False
        spec = self.registry.get(target.plugin)
        if not spec.supports_revocation:
            revoked = None
            note = f"the {spec.name} plug-in keeps nothing {name} could revoke"
        else:
            try:
                plugin = self.start_plugin(target)
                credential = self.vault.read_credential(link.id)
                await self.supervised(name, plugin.revoke(credential))
                revoked, note = True, "revoked at the target"
            except InterappError as exc:
                note = f"remote revocation FAILED ({exc.message}); the target may still " \
                       "honour it"
        outcome = {True: "ok", False: "failed", None: "not applicable"}[revoked]
        self.vault.delete_link(link.id, detail={"remote_revocation": outcome})
        # a new link may be to another remote account, whose events have seqs of their own
        self.vault.delete_secret(self._cursor_name(name))
        self.connections.pop(name, None)
        return revoked, note

    # --- live events ---------------------------------------------------------------------------

    def _cursor_name(self, target: str) -> str:
        local = self.config.local()
        return f"cursor:{target}:{local.username}"

    def load_cursor(self, target: str) -> str | None:
        """The last event cursor seen for ``target``."""
        value = self.vault.get_secret(self._cursor_name(target))
        return value.reveal() if value else None

    def save_cursor(self, target: str, cursor: str) -> None:
        """Remember the last event cursor seen for ``target``."""
        self.vault.put_secret(self._cursor_name(target), Secret(cursor))

    async def stream(self, name: str, prompter: Prompter, sink: asyncio.Queue[WatchEvent], *,
                     max_backoff: float = 30.0, autosave: bool = True) -> None:
        """Keep ``name``'s event stream alive forever, resuming from the last cursor.

        With ``autosave`` the cursor is saved as each event is queued; a consumer that may stop
        before handling what is queued (``watch --count``) passes ``autosave=False`` and calls
        :meth:`save_cursor` after handling each event, so nothing is marked seen unseen.
        Reconnects resume from the newest cursor queued, held in memory.
        """
        backoff = 0.5
        cursor = self.load_cursor(name)
        while True:
            try:
                conn = await self.connection(name, prompter)
                async for event in conn.plugin.events(cursor):
                    cursor = event.cursor
                    if autosave:
                        self.save_cursor(name, event.cursor)
                    backoff = 0.5
                    if conn.link and conn.link.state is LinkState.DEGRADED:
                        conn.link = self.vault.set_state(conn.link.id, LinkState.LINKED)
                    await sink.put(WatchEvent(name, event))
            except Unauthorized:
                self.connections.pop(name, None)  # reconnect: refresh or re-prompt
            except ConnectionLost as exc:
                hint = exc.retry_after or 0.0
                conn_ = self.connections.get(name)
                if conn_ is not None and conn_.link is not None:
                    conn_.link = self.vault.set_state(conn_.link.id, LinkState.DEGRADED,
                                                      exc.message)
                    self.vault.record(AuditEvent.STATE, link_id=conn_.link.id, target=name,
                                      detail={"state": "degraded"})
                self.connections.pop(name, None)
                stale = self.plugins.pop(name, None)
                if stale is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(stale.close(), 5)
                # a 503's Retry-After, when the target gave one; else backoff with jitter
                await asyncio.sleep(max(hint, backoff * (0.5 + random.random())))
                backoff = min(backoff * 2, max_backoff)
                continue
            except RateLimited as exc:  # honour the target's hint before trying again
                await asyncio.sleep(max(exc.retry_after or backoff, 0.1))
                continue
            except NeedsReauth:
                raise
            await asyncio.sleep(backoff * (0.5 + random.random()))  # jitter
            backoff = min(backoff * 2, max_backoff)


def describe_event(target: str, event: PluginEvent) -> dict[str, Any]:
    """A plug-in event as the plain dict ``watch --json`` prints."""
    return {"target": target, "type": event.type, "cursor": event.cursor, **{
        k: v for k, v in event.data.items() if k not in ("seq", "type")}}
