"""One target inside the host: its plug-in, its connection, its calls and its event stream.

Theory of operation
-------------------
A :class:`Slot` owns the plug-in object of one target (nothing outside the host ever sees
it). :meth:`Slot.connected` hands out the live connection, connecting through the claim-1
flow (:func:`~interapp.host.driver.connect_target`) when there is none — one connect at a
time per target. :meth:`Slot.call` runs one plug-in call on it, bounded in time; when the
target says the access token is no longer good (``Unauthorized``) the connection is dropped,
made again (a stored link is refreshed, an assertion is asked for again) and the call retried
once; when the target dropped (``ConnectionLost``) the plug-in object is replaced too. So no
caller ever works on a stale connection.

:meth:`Slot.run_stream` keeps the target's event stream open for as long as the host wants
events, resuming from the last cursor after every drop, with exponential backoff and jitter
(or the target's ``Retry-After``). Plug-in events become the typed events of
:mod:`interapp.host.events`; repeated presence without a change is not an event. A target
whose link is no longer accepted yields ``LinkNeedsReauth`` and its stream stops until
someone connects it again; the other targets go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from interapp.errors import (
    ConnectionLost,
    InterappError,
    LinkError,
    NeedsReauth,
    PluginCrashed,
    PluginTimeout,
    RateLimited,
    Unauthorized,
)
from interapp.host import _names, _rich
from interapp.host import events as ev
from interapp.host._hub import Hub
from interapp.host.config import Target
from interapp.host.driver import Connection, CredentialKeeper, HostContext, connect_target
from interapp.host.lifecycle import LinkState
from interapp.host.localapp import LocalSession
from interapp.host.model import Buddy, Message, TargetState
from interapp.host.prompts import Prompter
from interapp.host.registry import Registry
from interapp.plugins.contract import Plugin, PluginEvent, TargetConfig
from interapp.presence import Activity, PresenceState
from interapp.vault import AuditEvent
from interapp.vault.aio import AsyncVault

log = logging.getLogger("interapp.host")
T = TypeVar("T")
MAX_BACKOFF = 30.0
CONNECT_LIMIT = 600.0  # a person may take minutes to answer a prompt


@dataclass
class Services:
    """What every slot shares with the host."""

    vault: AsyncVault
    keeper: CredentialKeeper
    registry: Registry
    hub: Hub
    session: Callable[[], Awaitable[LocalSession]]
    target: Callable[[str], Awaitable[Target]]
    prompter: Callable[[], Prompter]
    call_timeout: float
    max_backoff: float = MAX_BACKOFF


_STATES: dict[str, PresenceState] = {s.value: s for s in PresenceState}


def _presence(value: Any) -> PresenceState:
    """A plug-in's presence value as a state (anything unknown is offline)."""
    if type(value) is PresenceState:
        return value
    # a dict lookup: the enum's constructor costs 3x as much, once per buddy per list
    return _STATES.get(str(value), PresenceState.OFFLINE)


class Slot:
    """One target's plug-in, connection and stream (see the module docstring)."""

    def __init__(self, name: str, services: Services) -> None:
        self.name = name
        self._s = services
        self.plugin: Plugin | None = None
        self._started_with: Target | None = None
        self.conn: Connection | None = None
        self.state = TargetState.IDLE
        self.problem: InterappError | None = None
        self._lock = asyncio.Lock()
        self.stream: asyncio.Task[None] | None = None
        self.wanted_presence: tuple[PresenceState, str] | None = None
        # each buddy as last seen: presence and status text (``seen``), activity
        # (``activities``, for host._rich). A buddy list the host just fetched is taken in
        # when either is next read (``listed``): most buddies() calls are followed by no
        # presence event before the next one, and then cost nothing here
        self._seen: dict[str, tuple[PresenceState, str]] = {}
        self._activities: dict[str, Activity | None] = {}
        self._listed: list[Sequence[Buddy]] = []
        # rich presence (host._rich): the activity set here (a 1-tuple; None: never set)
        self.wanted_activity: tuple[Activity | None] | None = None
        self.on_connected: Callable[[Slot], Awaitable[None]] | None = None

    # --- buddies as last seen -------------------------------------------------------------

    def listed(self, buddies: Sequence[Buddy]) -> None:
        """Note a buddy list just fetched (taken into ``seen`` and ``activities`` when they
        are next read, in the order the lists came)."""
        self._listed.append(buddies)
        if len(self._listed) > 8:  # nobody reads: keep the memory bounded
            self._take_listed()

    def _take_listed(self) -> None:
        seen, activities = self._seen, self._activities
        for buddies in self._listed:
            for b in buddies:
                seen[b.username] = (b.presence, b.status_text)
                activities[b.username] = b.activity
        self._listed.clear()

    @property
    def seen(self) -> dict[str, tuple[PresenceState, str]]:
        """Each buddy's presence and status text as last seen (lists and events)."""
        if self._listed:
            self._take_listed()
        return self._seen

    @property
    def activities(self) -> dict[str, Activity | None]:
        """Each buddy's activity as last seen."""
        if self._listed:
            self._take_listed()
        return self._activities

    # --- the plug-in object ---------------------------------------------------------------

    async def _plugin_for(self, target: Target) -> Plugin:
        if self.plugin is not None and self._started_with == target:
            return self.plugin
        await self.close_plugin()
        spec = self._s.registry.get(target.plugin)
        secret = await self._s.vault.get_secret(_names.target_client_secret(target.name))
        config = TargetConfig(name=target.name, plugin=target.plugin, server=target.server,
                              client_id=target.client_id, client_secret=secret,
                              account_system=target.account_system, tls=target.tls,
                              options=target.options)
        try:
            cls = await self._s.vault.run(spec.load)  # importing may read many files
            plugin = cls(config)
        except InterappError:
            raise
        except Exception as exc:
            raise PluginCrashed(f"plug-in {spec.name} failed to start: "
                                f"{type(exc).__name__}: {exc}") from exc
        self.plugin, self._started_with = plugin, target
        return plugin

    async def close_plugin(self) -> None:
        """Close the plug-in object (its sessions end); the next use starts a new one."""
        plugin, self.plugin, self._started_with, self.conn = self.plugin, None, None, None
        if plugin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(plugin.close(), 5)

    async def plugin_for_revocation(self, server: str) -> Plugin:
        """A plug-in object pointed at ``server`` (the one the link was made with)."""
        target = await self._s.target(self.name)
        if target.server.rstrip("/") != server.rstrip("/"):
            target = Target(target.name, target.plugin, server, target.client_id,
                            target.account_system, target.tls, dict(target.options))
        return await self._plugin_for(target)

    async def supervised(self, call: Awaitable[T], limit: float | None = None) -> T:
        """Run one plug-in call, bounded in time; unexpected errors become PluginCrashed."""
        limit = limit or self._s.call_timeout
        try:
            async with asyncio.timeout(limit):  # no extra task per call, unlike wait_for
                return await call
        except TimeoutError as exc:
            await self.close_plugin()
            raise PluginTimeout(f"{self.name}: the plug-in did not answer within {limit:.0f} s;"
                                " stopped it") from exc
        except InterappError as exc:
            if exc.target is None:
                exc.target = self.name
            raise
        except Exception as exc:
            await self.close_plugin()
            raise PluginCrashed(f"{self.name}: the plug-in failed: {type(exc).__name__}: "
                                f"{exc}") from exc

    # --- connecting -----------------------------------------------------------------------

    async def connected(self, prompter: Prompter | None = None, *,
                        requested_account: str | None = None, max_attempts: int = 3,
                        via: str | None = None) -> Connection:
        """The live connection, connecting through the claim-1 flow when there is none
        (``via``: the link way to sign in with, should a sign-in be needed)."""
        conn = self.conn
        if conn is not None and requested_account is None:
            return conn
        async with self._lock:
            conn = self.conn
            if conn is not None and requested_account in (None, conn.profile.username,
                                                          conn.profile.id):
                return conn
            return await self._connect(prompter or self._s.prompter(), requested_account,
                                       max_attempts, via)

    async def _connect(self, prompter: Prompter, requested_account: str | None,
                       max_attempts: int, via: str | None = None) -> Connection:
        target = await self._s.target(self.name)
        previous = self.state
        self.state = TargetState.CONNECTING
        try:
            plugin = await self._plugin_for(target)
            session = await self._s.session()
            ctx = HostContext(self._s.vault, session, self._s.keeper)
            outcome = await self.supervised(connect_target(
                ctx, target, plugin, prompter, max_attempts=max_attempts,
                requested_account=requested_account, via=via), limit=CONNECT_LIMIT)
        except InterappError as exc:
            self._failed(exc, previous)
            raise
        except BaseException:
            self.state = previous
            raise
        if outcome.connection is None:
            assert outcome.failure is not None
            outcome.failure.explain = outcome.trace
            self._failed(outcome.failure, previous)
            raise outcome.failure
        conn = outcome.connection
        self.conn, self.state, self.problem = conn, TargetState.CONNECTED, None
        self._s.hub.publish(ev.TargetConnected(self.name, conn.branch, conn.profile.username))
        if self.on_connected is not None:
            await self.on_connected(self)
        return conn

    def _failed(self, exc: InterappError, previous: TargetState) -> None:
        if exc.target is None:
            exc.target = self.name
        self.problem = exc
        if isinstance(exc, NeedsReauth):
            self.state = TargetState.NEEDS_REAUTH
        elif isinstance(exc, ConnectionLost):
            self.state = TargetState.DEGRADED
        elif isinstance(exc, LinkError) and previous is TargetState.CONNECTED:
            self.state = previous  # e.g. asked for another account: the live one stays
        else:
            self.state = TargetState.FAILED

    def invalidate(self, conn: Connection) -> None:
        """Forget ``conn`` (if it is still the current one): the next use connects again."""
        if self.conn is conn:
            self.conn = None
            if self.state is TargetState.CONNECTED:
                self.state = TargetState.IDLE

    async def call(self, work: Callable[[Plugin], Awaitable[T]]) -> T:
        """Run ``work`` on the live connection's plug-in; reconnect and retry once when the
        token was refused or the target dropped."""
        conn = await self.connected()
        try:
            return await self.supervised(work(conn.plugin))
        except Unauthorized:
            self.invalidate(conn)
        except ConnectionLost:
            if self.conn is conn:
                await self.close_plugin()
        conn = await self.connected()
        return await self.supervised(work(conn.plugin))

    # --- the event stream -----------------------------------------------------------------

    async def _cursor(self, session: LocalSession) -> str | None:
        account = session.local.username
        if account is None:
            return None
        vault = self._s.vault
        found = await vault.run(vault.sync.cursors.get, account, self.name)
        if found is not None:
            return found
        legacy = _names.cursor(self.name, account)  # kept as a secret up to vault 0003
        value = await vault.get_secret(legacy)
        if value is None:
            return None
        await vault.run(vault.sync.cursors.put, account, self.name, value.reveal())
        await vault.delete_secret(legacy)
        return value.reveal()

    async def run_stream(self) -> None:
        """Keep the event stream open until cancelled (see the module docstring)."""
        backoff = 0.5
        session = await self._s.session()
        cursor = await self._cursor(session)
        while True:
            conn: Connection | None = None
            try:
                conn = await self.connected()
                stream = conn.plugin.events(cursor)
                try:
                    async for event in stream:
                        cursor = event.cursor
                        backoff = 0.5
                        await self._restore(conn)
                        self.dispatch(conn, event)
                finally:  # async for never closes what it iterates: the socket closes now
                    close = getattr(stream, "aclose", None)
                    if close is not None:
                        with contextlib.suppress(Exception):
                            await close()
            except Unauthorized:  # reconnect (refresh or sign in again), without hammering
                if conn is not None:
                    self.invalidate(conn)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self._s.max_backoff)
                continue
            except ConnectionLost as exc:
                wait = max(exc.retry_after or 0.0, backoff * (0.5 + random.random()))
                await self._degrade(conn, exc.message, wait)
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, self._s.max_backoff)
                continue
            except RateLimited as exc:
                await asyncio.sleep(max(exc.retry_after or backoff, 0.1))
                continue
            except LinkError as exc:  # needs someone to sign in again: this target stops
                self._s.hub.publish(ev.LinkNeedsReauth(
                    self.name, getattr(exc, "account", None), exc.cause or exc.message,
                    exc.code))
                return
            except (PluginCrashed, PluginTimeout) as exc:
                wait = backoff * (0.5 + random.random())
                self._s.hub.publish(ev.TargetDegraded(self.name, exc.message, round(wait, 2)))
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, self._s.max_backoff)
                continue
            except InterappError as exc:
                wait = backoff * (0.5 + random.random())
                self.problem = exc
                self._s.hub.publish(ev.TargetDegraded(self.name, exc.message, round(wait, 2)))
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, self._s.max_backoff)
                continue
            await asyncio.sleep(backoff * (0.5 + random.random()))  # jitter
            backoff = min(backoff * 2, self._s.max_backoff)

    async def _restore(self, conn: Connection) -> None:
        if conn.link is not None and conn.link.state is LinkState.DEGRADED:
            conn.link = await self._s.vault.set_state(conn.link.id, LinkState.LINKED,
                                                      "the event stream works again")
        if self.state is TargetState.DEGRADED:
            self.state = TargetState.CONNECTED

    async def _degrade(self, conn: Connection | None, reason: str, wait: float) -> None:
        if conn is not None and conn.link is not None and conn.link.state in (
                LinkState.LINKED, LinkState.DEGRADED):
            conn.link = await self._s.vault.set_state(conn.link.id, LinkState.DEGRADED, reason)
            await self._s.vault.record(AuditEvent.STATE, link_id=conn.link.id,
                                       target=self.name, detail={"state": "degraded"})
        if conn is not None and self.conn is conn:
            await self.close_plugin()
        self.state = TargetState.DEGRADED
        self._s.hub.publish(ev.TargetDegraded(self.name, reason, round(wait, 2)))

    # --- plug-in events → typed events ----------------------------------------------------

    def dispatch(self, conn: Connection, event: PluginEvent) -> None:
        """Turn one plug-in event into typed events for the hub (and handle its cursor)."""
        typed = self.typed(conn, event)
        hub = self._s.hub
        if not typed:
            hub.publish_cursor(self.name, event.cursor)
            return
        for extra in typed[:-1]:
            hub.publish(extra)
        hub.publish(typed[-1], event.cursor)

    def typed(self, conn: Connection, event: PluginEvent) -> list[ev.Event]:
        """The typed events for ``event`` (none when it repeats a known presence)."""
        data: Mapping[str, Any] = event.data
        me = {conn.profile.username, conn.profile.id}
        meta: dict[str, Any] = {"cursor": event.cursor, "raw": dict(data)}
        kind = event.type
        if kind == "message":
            sender = str(data.get("from", ""))
            message = Message(self.name, str(data.get("message_id") or data.get("id") or ""),
                              sender, str(data.get("to", "")), str(data.get("body", "")),
                              str(data.get("sent_at", "")),
                              data.get("client_msg_id") or None, sender in me)
            return [ev.MessageReceived(self.name, message, **meta)]
        if kind == "presence":
            username = str(data.get("username", ""))
            state, text = _presence(data.get("state")), str(data.get("status_text") or "")
            own = username in me
            activity = _rich.activity_events(self, username, data, own, meta)
            before = self.seen.get(username, (PresenceState.OFFLINE, ""))
            if before == (state, text) and username in self.seen:
                return activity
            self.seen[username] = (state, text)
            out: list[ev.Event] = []
            if not own and before[0] is PresenceState.OFFLINE and \
                    state is not PresenceState.OFFLINE:
                out.append(ev.BuddyCameOnline(self.name, username, state, text, **meta))
            out.append(ev.BuddyPresence(self.name, username, state, text, before[0], own,
                                        **meta))
            return out + activity
        if kind == "contact_request":
            return [ev.ContactRequest(self.name, str(data.get("from", "")), **meta)]
        if kind in ("contact_added", "contact_accepted"):
            contact = data.get("contact")
            who = contact.get("username") if isinstance(contact, dict) else \
                data.get("username")
            return [ev.ContactAdded(self.name, str(who or ""), **meta)]
        if kind == "contact_removed":
            self.seen.pop(str(data.get("username", "")), None)
            return [ev.ContactRemoved(self.name, str(data.get("username", "")), **meta)]
        if kind == "cursor_reset":
            return [ev.CursorReset(self.name, str(data.get("message", "")), **meta)]
        rich = _rich.rich_events(self, conn, kind, data, meta)
        if rich is not None:
            return rich
        return [ev.OtherEvent(self.name, kind, **meta)]
