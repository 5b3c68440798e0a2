"""The host façade: the one API an application embeds (see ``docs/sdk.md``).

Theory of operation
-------------------
:class:`Host` is the local application's side of claim 1, for one local user. It owns the
data folder (``local.toml``, ``targets.toml``, the vault), the session with the local
application, and one :class:`~interapp.host._slot.Slot` per target, which owns that target's
plug-in object, connection and event stream. Nothing outside the host ever holds a plug-in
object, a vault name or a connection: every call names a target and the host connects it on
demand, refreshes what expired, and reconnects what dropped (see :mod:`._slot`).

No file or database I/O runs on the event loop: the vault and the configuration files are
used on the vault's worker thread (:class:`~interapp.vault.aio.AsyncVault`). The methods that
are not coroutines (:meth:`Host.targets`, :attr:`Host.signed_in` …) answer from what the host
read last; :meth:`Host.reload` reads hand edits of ``targets.toml`` at once (connecting a
target always reads its current configuration).

A call that names a target may prompt (through the host's prompter, or the one passed in);
a call across targets (``buddies()``, ``set_presence()`` without ``targets``) never prompts:
it uses the connected targets and those that connect without asking.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import inspect
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from interapp.client import ServerClient
from interapp.errors import ConfigError, InterappError, NoLocalApp, NotFoundError, NotSignedIn
from interapp.host import _names
from interapp.host import events as ev
from interapp.host._hub import Hub, Subscription
from interapp.host._people import PeopleMixin
from interapp.host._rich import RichPresence
from interapp.host._slot import MAX_BACKOFF, Services, Slot, _presence
from interapp.host.config import (
    HostConfig,
    LocalApp,
    Target,
    check_server_url,
    check_target_name,
)
from interapp.host.driver import CredentialKeeper
from interapp.host.localapp import LocalSession
from interapp.host.model import (
    Buddies,
    Buddy,
    ConnectResult,
    LinkInfo,
    LocalInfo,
    LocalUser,
    Message,
    PresenceResult,
    TargetInfo,
    TargetState,
    UnlinkResult,
)
from interapp.host.prompts import NoInput, Prompter
from interapp.host.registry import Registry, discover
from interapp.paths import data_home
from interapp.plugins.contract import Plugin
from interapp.presence import MAX_STATUS_TEXT, PresenceState, parse_presence
from interapp.secret import Secret
from interapp.vault import AuditReport, Link
from interapp.vault.aio import AsyncVault
from interapp.vault.db import MEMORY

log = logging.getLogger("interapp.host")
T = TypeVar("T")
E = TypeVar("E", bound=ev.Event)
SENT_MEMORY = 2000
MAX_BODY = 8000
CALL_TIMEOUT = 30.0


class _Opening:
    """What :meth:`Host.open` returns: ``await`` it, or use it with ``async with``."""

    def __init__(self, make: Callable[[], Awaitable[Host]]) -> None:
        self._make = make
        self._host: Host | None = None

    def __await__(self) -> Generator[Any, None, Host]:
        return self._make().__await__()

    async def __aenter__(self) -> Host:
        self._host = await self._make()
        return self._host

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._host is not None:
            await self._host.aclose()


def _secret(value: Secret | str | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value)


class Host(RichPresence, PeopleMixin):
    """The local application's host for one local user (see the module docstring).

    Make one with :meth:`Host.open`; close it with :meth:`aclose` (or ``async with``).
    """

    def __init__(self, *, home: Path | None, vault: AsyncVault, config: HostConfig,
                 registry: Registry, prompter: Prompter | None,
                 call_timeout: float = CALL_TIMEOUT) -> None:
        """Use :meth:`Host.open`."""
        self._home = home
        self._vault = vault
        self._config = config
        self._registry = registry
        self._prompter: Prompter = prompter or NoInput()
        self._hub = Hub(self._cursor_handled)
        lock_dir = home / "locks" if home is not None else None
        self._keeper = CredentialKeeper(vault, lock_dir)
        self._services = Services(vault, self._keeper, registry, self._hub, self._session,
                                  self._target, lambda: self._prompter, call_timeout)
        self._slots: dict[str, Slot] = {}
        self._local: LocalApp | None = None
        self._targets: dict[str, Target] = {}
        self._session_obj: LocalSession | None = None
        self._signed_in: str | None = None
        self._sent: collections.OrderedDict[str, Message] = collections.OrderedDict()
        self._send_locks: dict[str, asyncio.Lock] = {}
        self._callbacks: list[tuple[type[ev.Event], Callable[[Any], Any]]] = []
        self._dispatcher: asyncio.Task[None] | None = None
        self._dirty: dict[str, str] = {}
        self._saver: asyncio.Task[None] | None = None
        self._save_wake = asyncio.Event()
        self._closed = False
        self._people_init()

    # --- opening and closing ----------------------------------------------------------------

    @classmethod
    def open(cls, home: Path | str | None = None, *, memory: bool = False,
             vault_key: Secret | str | None = None, vault_url: str | None = None,
             prompter: Prompter | None = None, passphrase: Callable[[], str] | None = None,
             env: Mapping[str, str] | None = None, call_timeout: float = CALL_TIMEOUT,
             max_backoff: float = MAX_BACKOFF) -> _Opening:
        """Open the host on a data folder (``None``: the default one, ``$INTERAPP_HOME`` or
        the XDG data folder), or in memory only (``memory=True``: nothing is written).

        ``vault_key`` unlocks the vault (base64 of 32 random bytes, or a passphrase);
        without it the vault key comes from ``INTERAPP_VAULT_KEY``, the OS keyring or
        ``passphrase()`` (see ``docs/host.md``). ``vault_url`` keeps the vault in PostgreSQL.
        ``prompter`` answers the claim-1 prompt when a call does not pass its own.
        ``call_timeout`` bounds each plug-in call; ``max_backoff`` the wait between
        reconnects of a dropped event stream.
        """

        async def make() -> Host:
            host = await cls._make(home, memory, _secret(vault_key), vault_url, prompter,
                                   passphrase, dict(os.environ if env is None else env),
                                   call_timeout)
            host._services.max_backoff = max_backoff
            return host

        return _Opening(make)

    @classmethod
    async def _make(cls, home: Path | str | None, memory: bool, vault_key: Secret | None,
                    vault_url: str | None, prompter: Prompter | None,
                    passphrase: Callable[[], str] | None, env: dict[str, str],
                    call_timeout: float) -> Host:
        if memory:
            location: str | Path = vault_url or MEMORY
            if vault_key is None and vault_url is None:
                vault_key = Secret(base64.b64encode(os.urandom(32)).decode())
        else:
            location = vault_url or env.get("INTERAPP_VAULT_DB") or ""
        if vault_key is not None:
            env = {**env, "INTERAPP_VAULT_KEY": vault_key.reveal(), "INTERAPP_VAULT_KEYRING": "0"}
        loop = asyncio.get_running_loop()

        def prepare() -> tuple[Path | None, str | Path, Registry]:
            target_home: Path | None = None
            if not memory:
                target_home = data_home() if home is None else Path(home).expanduser()
                target_home.mkdir(parents=True, exist_ok=True, mode=0o700)
            return target_home, location or (target_home or Path()) / "vault.db", discover()

        folder, location, registry = await loop.run_in_executor(None, prepare)
        vault = await AsyncVault.open(location, env=env, passphrase=passphrase)
        host = cls(home=folder, vault=vault, config=HostConfig(folder), registry=registry,
                   prompter=prompter, call_timeout=call_timeout)
        try:
            await host.reload()
            if host._local is not None and host._local.username is not None and \
                    await vault.get_secret(_names.LOCAL_SESSION) is not None:
                host._signed_in = host._local.username
        except BaseException:
            await vault.aclose()
            raise
        return host

    async def aclose(self) -> None:
        """Stop every stream, save the cursors, close the plug-ins and the vault."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._dispatcher, self._saver) if t is not None]
        tasks += [s.stream for s in self._slots.values() if s.stream is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._hub.close()
        await self._flush_cursors()
        await self._people_close()
        for slot in self._slots.values():
            await slot.close_plugin()
        if self._session_obj is not None:
            await self._session_obj.aclose()
        await self._vault.aclose()

    async def __aenter__(self) -> Host:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- what the host knows ----------------------------------------------------------------

    @property
    def home(self) -> Path | None:
        """The data folder (None for an in-memory host)."""
        return self._home

    @property
    def prompter(self) -> Prompter:
        """The prompter used when a call passes none (default: never prompts)."""
        return self._prompter

    @prompter.setter
    def prompter(self, value: Prompter) -> None:
        self._prompter = value

    @property
    def signed_in(self) -> str | None:
        """The local account signed in, or None."""
        return self._signed_in

    @property
    def local(self) -> LocalInfo | None:
        """The local application, or None when none is configured."""
        lo = self._local
        return None if lo is None else LocalInfo(lo.server, lo.client_id, lo.issuer,
                                                 lo.username)

    async def reload(self) -> None:
        """Read ``local.toml`` and ``targets.toml`` again (hand edits, another process)."""
        local, targets = await self._vault.run(
            lambda: (self._config.local_or_none(), self._config.targets()))
        if local is not None and self._local is not None and \
                (local.server, local.client_id, local.username) != \
                (self._local.server, self._local.client_id, self._local.username):
            await self._reset_session()
            self._signed_in = None
            if local.username is not None and \
                    await self._vault.get_secret(_names.LOCAL_SESSION) is not None:
                self._signed_in = local.username
        self._local, self._targets = local, targets

    def _require_local(self) -> LocalApp:
        if self._local is None:
            raise NoLocalApp("no local application is configured yet")
        return self._local

    async def _session(self) -> LocalSession:
        local = self._require_local()
        if self._session_obj is None:
            self._session_obj = await LocalSession.open(local, self._vault)
        return self._session_obj

    async def _reset_session(self) -> None:
        for slot in self._slots.values():
            if slot.stream is not None:
                slot.stream.cancel()
            await slot.close_plugin()
        self._slots.clear()
        if self._session_obj is not None:
            await self._session_obj.aclose()
            self._session_obj = None

    # --- the local application --------------------------------------------------------------

    async def set_local(self, url: str, *, client_id: str,
                        client_secret: Secret | str | None = None) -> LocalInfo:
        """Choose the local application (an interapp server at ``url``); its issuer comes
        from its RFC 8414 metadata. Signs the current user out."""
        url = check_server_url(url)
        secret = _secret(client_secret)
        client = ServerClient(url, client_id=client_id, client_secret=secret)
        try:
            issuer = str((await client.metadata())["issuer"])
        finally:
            await client.aclose()
        local = LocalApp(server=url, client_id=client_id, issuer=issuer)
        await self._vault.run(self._config.set_local, local)
        await self._vault.delete_secret(_names.LOCAL_SESSION)
        if secret is not None:
            await self._vault.put_secret(_names.LOCAL_CLIENT_SECRET, secret)
        else:
            await self._vault.delete_secret(_names.LOCAL_CLIENT_SECRET)
        await self._reset_session()
        self._local, self._signed_in = local, None
        return LocalInfo(url, client_id, issuer, None)

    async def sign_in(self, username: str, password: Secret | str) -> LocalUser:
        """Sign in to the local application (the local account of claim 1)."""
        secret = _secret(password)
        assert secret is not None
        before = self._signed_in
        if before is not None and before != username:
            await self._reset_session()
        session = await self._session()
        me = await session.login(username, secret)
        local = replace(self._require_local(), username=str(me["username"]))
        await self._vault.run(self._config.set_local, local)
        self._local, self._signed_in = local, local.username
        return LocalUser(str(me["username"]), str(me.get("display_name") or me["username"]),
                         local.issuer)

    async def sign_out(self) -> None:
        """Forget the local session; every target is disconnected."""
        await self._reset_session()
        await self._vault.delete_secret(_names.LOCAL_SESSION)
        self._signed_in = None

    # --- targets ------------------------------------------------------------------------------

    async def _target(self, name: str) -> Target:
        self._targets = await self._vault.run(self._config.targets)
        found = self._targets.get(name)
        if found is None:
            known = ", ".join(sorted(self._targets)) or "none yet"
            error = NotFoundError(f"no target {name!r} (configured: {known})")
            error.target = name
            raise error
        return found

    def _slot(self, name: str) -> Slot:
        slot = self._slots.get(name)
        if slot is None:
            slot = self._slots[name] = Slot(name, self._services)
            slot.on_connected = self._after_connect
        return slot

    def _info(self, target: Target) -> TargetInfo:
        slot = self._slots.get(target.name)
        conn = slot.conn if slot else None
        problem = slot.problem if slot else None
        return TargetInfo(target.name, target.plugin, target.server, target.client_id,
                          target.account_system, target.tls, dict(target.options),
                          slot.state if slot else TargetState.IDLE,
                          conn.profile.username if conn else None,
                          conn.branch if conn else None,
                          problem.message if problem else "", problem.code if problem else "")

    def targets(self) -> list[TargetInfo]:
        """The configured targets and their connection state, by name."""
        return [self._info(t) for _, t in sorted(self._targets.items())]

    def target(self, name: str) -> TargetInfo:
        """One configured target (NotFoundError listing the known ones)."""
        if name not in self._targets:
            known = ", ".join(sorted(self._targets)) or "none yet"
            raise NotFoundError(f"no target {name!r} (configured: {known})")
        return self._info(self._targets[name])

    async def add_target(self, name: str, *, plugin: str, server: str,
                         client_id: str | None = None,
                         client_secret: Secret | str | None = None,
                         account_system: str = "separate", tls: bool | None = None,
                         options: Mapping[str, str] | None = None) -> TargetInfo:
        """Add or replace a target; its client secret goes to the vault, the rest to
        ``targets.toml`` (which stays readable and safe to edit)."""
        check_target_name(name)
        spec = self._registry.get(plugin)
        url = check_server_url(server, spec.url_schemes)
        if account_system not in ("shared", "separate"):
            raise ConfigError("account_system must be shared or separate")
        secret = _secret(client_secret)

        def save() -> dict[str, Target]:
            targets = self._config.targets()
            kept = dict(targets[name].options) if name in targets else {}
            targets[name] = Target(name, plugin, url, client_id,
                                   "shared" if account_system == "shared" else "separate",
                                   tls, {**kept, **dict(options or {})})
            self._config.save_targets(targets)
            return self._config.targets()

        self._targets = await self._vault.run(save)
        if secret is not None:
            await self._vault.put_secret(_names.target_client_secret(name), secret)
        slot = self._slots.get(name)
        if slot is not None and slot.conn is None:
            await slot.close_plugin()  # started with the old configuration
        return self._info(self._targets[name])

    async def remove_target(self, name: str) -> None:
        """Remove a target from the configuration (its link, if any, stays until unlinked)."""
        await self._target(name)

        def save() -> dict[str, Target]:
            targets = self._config.targets()
            targets.pop(name, None)
            self._config.save_targets(targets)
            return self._config.targets()

        await self._stop_slot(name)
        self._targets = await self._vault.run(save)
        await self._vault.delete_secret(_names.target_client_secret(name))

    async def _stop_slot(self, name: str) -> None:
        slot = self._slots.pop(name, None)
        if slot is None:
            return
        if slot.stream is not None:
            slot.stream.cancel()
            await asyncio.gather(slot.stream, return_exceptions=True)
        await slot.close_plugin()

    # --- connecting (claim 1) -----------------------------------------------------------------

    def _require_signed_in(self) -> str:
        self._require_local()
        if self._signed_in is None:
            raise NotSignedIn("nobody is signed in to the local application")
        return self._signed_in

    async def connect(self, name: str, prompter: Prompter | None = None, *,
                      account: str | None = None, max_attempts: int = 3,
                      reconnect: bool = False, via: str | None = None) -> ConnectResult:
        """Connect a target through the link-or-prompt flow: same account system, stored
        link, or a prompt (``prompter``, else the host's). ``account`` is the remote account
        you mean: a stored link to another one is refused (LinkMismatch), never used.
        A connected target is returned as it is, unless ``reconnect`` (e.g. the user asked
        to re-link): then the flow runs again, and a link that needs it is re-authenticated.

        ``via`` (``"browser"``, ``"device"``, ``"password"``) is the link way to sign in with
        should a sign-in be needed; by default the most secure one the target and the
        prompter both offer (see docs/host.md, "The three ways to link").

        Raises the :class:`~interapp.errors.LinkError` family (``PromptUnavailable``,
        ``PromptDeclined``, ``LoginRefused``, ``LinkMismatch``, ``NeedsReauth``,
        ``ServerChanged``, ``WayUnavailable``, ``AuthorizationMismatch``), the OAuth errors
        of a browser or device sign-in (``AccessDenied``, ``ExpiredToken``,
        ``InvalidGrant``) or ``ConnectionLost`` when it cannot.
        """
        self._require_signed_in()
        await self._target(name)
        if via is not None and via not in ("browser", "device", "password"):
            raise ConfigError(f"unknown link way {via!r}: use browser, device or password")
        slot = self._slot(name)
        if reconnect and slot.conn is not None:
            slot.invalidate(slot.conn)
        conn = await slot.connected(prompter, requested_account=account,
                                    max_attempts=max_attempts, via=via)
        return ConnectResult(name, conn.branch, conn.profile.username, conn.profile.id,
                             conn.profile.display_name,
                             self._link_info(conn.link) if conn.link else None, conn.trace,
                             str(conn.way) if conn.way else None,
                             str(conn.way_reason) if conn.way_reason else None)

    async def _after_connect(self, slot: Slot) -> None:
        conn = slot.conn
        if slot.wanted_presence is not None and conn is not None:
            state, text = slot.wanted_presence
            with contextlib.suppress(InterappError):  # on this very connection: no reconnect
                await slot.supervised(conn.plugin.set_presence(state, text))
        await self._reapply_activity(slot)
        if self._hub.subscribers and (slot.stream is None or slot.stream.done()):
            self._start_stream(slot)

    def _start_stream(self, slot: Slot) -> None:
        slot.stream = asyncio.create_task(slot.run_stream(), name=f"interapp-stream-{slot.name}")

    async def _use(self, name: str, work: Callable[[Plugin], Awaitable[T]]) -> T:
        self._require_signed_in()
        if name not in self._targets:  # connecting reads the target's current configuration
            await self._target(name)
        return await self._slot(name).call(work)

    async def _across(self, names: list[str] | None,
                      work: Callable[[Plugin], Awaitable[T]]) -> dict[str, T | InterappError]:
        """``work`` on each named target, or on every target that is connected or connects
        without a prompt; failures stay per target."""
        quiet = names is None
        chosen = names if names is not None else sorted(self._targets)
        if chosen:
            self._require_signed_in()

        async def one(name: str) -> T | InterappError:
            try:
                slot = self._slot(name)
                if quiet and slot.conn is None:
                    await self._target(name)
                    await slot.connected(NoInput())
                return await self._use(name, work)
            except InterappError as exc:
                if exc.target is None:
                    exc.target = name
                return exc

        if len(chosen) == 1:  # one target: no task to gather (~25 µs and a loop turn)
            return {chosen[0]: await one(chosen[0])}
        results = await asyncio.gather(*(one(n) for n in chosen))
        return dict(zip(chosen, results, strict=True))

    # --- buddies, messages, presence ----------------------------------------------------------

    async def buddies(self, target: str | None = None) -> Buddies:
        """The buddy list of one target, or of every target (``problems`` says which could
        not be asked). Each :class:`Buddy` names its target."""
        results = await self._across([target] if target else None,
                                     lambda p: p.buddies())
        found: list[Buddy] = []
        problems: dict[str, InterappError] = {}
        for name, value in results.items():
            if isinstance(value, InterappError):
                if target is not None:
                    raise value
                problems[name] = value
                continue
            of = Buddy._of  # once per buddy: kept lean (issue 11's ≤ 5 % overhead)
            mine = [of(name, b, _presence(b.presence)) for b in value]
            self._slot(name).listed(mine)
            found.extend(mine)
        return Buddies(found, problems)

    async def send(self, target: str, to: str, body: str, *,
                   client_msg_id: str | None = None) -> Message:
        """Send ``body`` to buddy ``to``; returns the message as stored by the target.

        ``client_msg_id`` (default: a new one) makes retries safe: the same id is sent once.
        """
        if not body.strip():
            raise ConfigError("the message is empty")
        if len(body) > MAX_BODY:
            raise ConfigError(f"the message is longer than {MAX_BODY} characters")
        cmid = client_msg_id or uuid.uuid4().hex
        key = f"{target}\0{cmid}"
        async with self._send_locks.setdefault(key, asyncio.Lock()):
            try:
                if key in self._sent:
                    return self._sent[key]
                sent = await self._use(target, lambda p: p.send(to, body, cmid))
                msg = Message(target, sent.id, sent.sender, sent.recipient, sent.body,
                              sent.sent_at, sent.client_msg_id or cmid, True)
                self._sent[key] = msg
                while len(self._sent) > SENT_MEMORY:
                    self._sent.popitem(last=False)
                return msg
            finally:
                self._send_locks.pop(key, None)

    async def history(self, target: str, user: str, *, limit: int = 50,
                      before: str | None = None) -> list[Message]:
        """The conversation with ``user``, newest last; ``before`` (a message id from an
        earlier page) pages back."""
        if not 1 <= limit <= 500:
            raise ConfigError("limit must be between 1 and 500")
        found = await self._use(target, lambda p: p.history(user, limit=limit, before=before))
        slot = self._slot(target)
        me = {slot.conn.profile.username, slot.conn.profile.id} if slot.conn else set()
        return [Message(target, m.id, m.sender, m.recipient, m.body, m.sent_at,
                        m.client_msg_id, m.sender in me) for m in found]

    async def set_presence(self, state: PresenceState | str, status_text: str = "", *,
                           targets: list[str] | None = None) -> PresenceResult:
        """Set presence and status text on the named targets, or every connected one (None).
        The host keeps it: a target that reconnects gets it again."""
        try:
            presence = parse_presence(str(state))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if len(status_text) > MAX_STATUS_TEXT:
            raise ConfigError(f"the status text is longer than {MAX_STATUS_TEXT} characters")
        names = targets if targets is not None else \
            [n for n, s in sorted(self._slots.items()) if s.conn is not None]
        for name in names:
            self._slot(name).wanted_presence = (presence, status_text)
        results = await self._across(names, lambda p: p.set_presence(presence, status_text))
        ok = tuple(n for n, v in results.items() if not isinstance(v, InterappError))
        problems = {n: v for n, v in results.items() if isinstance(v, InterappError)}
        return PresenceResult(presence, status_text, ok,
                              {n: v.message for n, v in problems.items()}, problems)

    async def add_buddy(self, target: str, user: str) -> None:
        """Ask ``user`` on ``target`` to become a buddy."""
        await self._use(target, lambda p: p.add_buddy(user))

    async def accept_buddy(self, target: str, user: str) -> None:
        """Accept ``user``'s buddy request on ``target``."""
        await self._use(target, lambda p: p.accept_buddy(user))

    async def remove_buddy(self, target: str, user: str) -> None:
        """Remove ``user`` from the buddies on ``target``."""
        await self._use(target, lambda p: p.remove_buddy(user))

    # --- links ----------------------------------------------------------------------------------

    def _link_info(self, link: Link) -> LinkInfo:
        target = self._targets.get(str(link.target))
        changed = target is not None and \
            target.server.rstrip("/") != link.target_app.rstrip("/")
        return LinkInfo(str(link.target), link.remote_account_name, link.remote_account_id,
                        link.state, link.state_reason, link.target_app, changed,
                        link.created_at, link.last_used_at, str(link.id))

    async def links(self) -> list[LinkInfo]:
        """The signed-in user's links, by target."""
        local = self._require_local()
        user = self._require_signed_in()
        self._targets = await self._vault.run(self._config.targets)
        found = await self._vault.list_links(local.issuer, user)
        return [self._link_info(ln) for ln in sorted(found, key=lambda ln: ln.target)]

    async def link(self, name: str) -> LinkInfo | None:
        """The signed-in user's link to ``name``, or None."""
        local = self._require_local()
        user = self._require_signed_in()
        found = await self._vault.get_link(local.issuer, user, name)
        return self._link_info(found) if found else None

    async def unlink(self, name: str) -> UnlinkResult:
        """Revoke the grant at the target (at the server the link was made with), then
        destroy the local credential, whatever the target answered."""
        local = self._require_local()
        user = self._require_signed_in()
        link = await self._vault.get_link(local.issuer, user, name)
        if link is None:
            raise NotFoundError(f"{user} has no link to {name}")
        revoked: bool | None = False
        target = self._targets.get(name) or await self._target(name)
        spec = self._registry.get(target.plugin)
        slot = self._slot(name)
        if slot.stream is not None:
            slot.stream.cancel()
            await asyncio.gather(slot.stream, return_exceptions=True)
            slot.stream = None
        if not spec.supports_revocation:
            revoked, note = None, f"the {spec.name} plug-in keeps nothing {name} could revoke"
        else:
            try:
                plugin = await slot.plugin_for_revocation(link.target_app)
                credential = await self._vault.read_credential(link.id)
                await slot.supervised(plugin.revoke(credential))
                revoked, note = True, "revoked at the target"
            except InterappError as exc:
                note = f"remote revocation FAILED ({exc.message}); the target may still " \
                       "honour it"
        outcome = {True: "ok", False: "failed", None: "not applicable"}[revoked]
        await self._vault.delete_link(link.id, detail={"remote_revocation": outcome})
        # a new link may be to another remote account, whose events have seqs of their own
        await self._vault.run(self._vault.sync.cursors.delete, user, name)
        await self._vault.delete_secret(_names.cursor(name, user))  # a vault 0003 leftover
        await self._vault.delete_secret(_names.link_way(link.id))
        await self._stop_slot(name)
        return UnlinkResult(name, revoked, True, note)

    async def verify_audit(self) -> AuditReport:
        """Check the vault's hash-chained audit log."""
        return await self._vault.verify_audit()

    # --- events ---------------------------------------------------------------------------------

    def events(self) -> Subscription:
        """Typed events of every connected target, merged (an async iterator; see
        :mod:`interapp.host.events`). Targets connected later join in. Leave with
        ``aclose()`` (or ``async with``); closing the host ends it."""
        sub = self._hub.subscribe()
        for slot in self._slots.values():
            if slot.conn is not None and (slot.stream is None or slot.stream.done()):
                self._start_stream(slot)
        return sub

    def on(self, kind: type[E], callback: Callable[[E], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` (a function or a coroutine function) for every event of
        class ``kind`` (``events.Event`` for all). Returns a function that unregisters it."""
        entry = (kind, callback)
        self._callbacks.append(entry)
        if self._dispatcher is None or self._dispatcher.done():
            sub = self.events()
            self._dispatcher = asyncio.create_task(self._dispatch(sub),
                                                   name="interapp-callbacks")

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(entry)

        return off

    async def _dispatch(self, sub: Subscription) -> None:
        async for event in sub:
            for kind, callback in list(self._callbacks):
                if not isinstance(event, kind):
                    continue
                try:
                    result = callback(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:  # an application's bug must not stop the others
                    log.exception("a callback for %s failed", kind.__name__)

    def _cursor_handled(self, target: str, cursor: str) -> None:
        self._dirty[target] = cursor
        self._save_wake.set()
        if self._saver is None or self._saver.done():
            self._saver = asyncio.get_running_loop().create_task(
                self._save_cursors(), name="interapp-cursors")

    async def _save_cursors(self) -> None:
        while True:
            await self._save_wake.wait()
            self._save_wake.clear()
            await self._flush_cursors()

    async def _flush_cursors(self) -> None:
        user = self._signed_in
        while self._dirty:
            target, cursor = self._dirty.popitem()
            if user is None:
                continue  # signed out meanwhile: the stream is stopping
            with contextlib.suppress(InterappError):
                await self._vault.run(self._vault.sync.cursors.put, user, target, cursor)
