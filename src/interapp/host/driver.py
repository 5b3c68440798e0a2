"""The I/O driver around the link-or-prompt resolver (claim 1).

Theory of operation: :func:`connect_target` builds a :class:`~interapp.host.resolver.ResolveRequest`
from the vault and the target's configuration, then loops — perform the actions the resolver
returns (talk to the local app, the plug-in, the prompter, the vault), turn each outcome into an
event, feed it back — until the resolver emits ``Connected`` or ``Failed``. All decisions are
the resolver's; this module only does the I/O.

Stored credentials go through :class:`CredentialKeeper`, which makes refreshes *single-flight*
per link (an asyncio lock in the process, a file lock across processes) and *crash-safe*: the
intent to refresh (with an idempotency key) is saved before the request, and the new credential
is saved (compare-and-swap on the link's version) before it is used. A host killed between the
target's answer and the save retries with the same key after restart and gets the same new
tokens back, so the link survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from interapp.errors import (
    ConnectionLost,
    InterappError,
    NeedsReauth,
    NotSignedIn,
    PromptUnavailable,
    RateLimited,
    Unauthorized,
)
from interapp.host import _linkways, _names
from interapp.host import resolver as r
from interapp.host.config import Target
from interapp.host.lifecycle import USABLE_STATES
from interapp.host.localapp import LocalSession
from interapp.host.prompts import LinkCompletion, Prompter, PromptRequest, face_ways
from interapp.plugins.contract import Credential, LinkWay, Login, Plugin, Profile
from interapp.secret import Secret
from interapp.vault import AuditEvent, Link, StaleVersion
from interapp.vault.aio import AsyncVault

#: Fault-injection switch for crash-safety tests: ``crash-after-refresh`` kills the process
#: after the target answered a refresh and before the vault saved the new credential.
FAULT_ENV = "INTERAPP_FAULT"


@dataclass
class Connection:
    """A target connected through one of the four branches."""

    target: Target
    plugin: Plugin
    branch: r.Branch
    link: Link | None
    profile: Profile
    trace: str
    way: LinkWay | None = None
    way_reason: r.WayReason | None = None


@dataclass
class Outcome:
    """What :func:`connect_target` ended with (the connection, or the failure) and why."""

    connection: Connection | None
    failure: InterappError | None
    trace: str


@dataclass
class CredentialKeeper:
    """Single-flight, crash-safe refresh of stored credentials.

    ``lock_dir`` None (an in-memory host) means no other process can share the vault, so the
    in-process lock is enough.
    """

    vault: AsyncVault
    lock_dir: Path | None
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    refreshes: int = 0

    @contextlib.contextmanager
    def _file_lock(self, link_id: str) -> Iterator[None]:
        if self.lock_dir is None:
            yield
            return
        self.lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.lock_dir / f"{link_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    async def fresh(self, link_id: str, plugin: Plugin, *, force: bool = False,
                    seen_version: int | None = None) -> tuple[Credential, Link]:
        """The link's credential, refreshed first when needed (or ``force``d)."""
        lock = self._locks.setdefault(link_id, asyncio.Lock())
        async with lock:
            file_lock = self._file_lock(link_id)
            await anyio.to_thread.run_sync(file_lock.__enter__)
            try:
                return await self._fresh_locked(link_id, plugin, force, seen_version)
            finally:
                file_lock.__exit__(None, None, None)

    async def _fresh_locked(self, link_id: str, plugin: Plugin, force: bool,
                            seen_version: int | None) -> tuple[Credential, Link]:
        link = await self.vault.get_link_by_id(link_id)
        if link is None:
            raise NeedsReauth("the link was removed")
        credential = await self.vault.read_credential(link_id)
        someone_refreshed = seen_version is not None and link.version != seen_version
        pending = plugin.has_pending_refresh(credential)
        if not pending and (someone_refreshed or not (
                force or plugin.needs_refresh(credential, time.time()))):
            return credential, link
        if not pending:  # write-ahead: the intent (with its idempotency key) is durable first
            credential = plugin.prepare_refresh(credential)
            link = await self.vault.replace_credential(link_id, expected_version=link.version,
                                                       credential=credential,
                                                       event=AuditEvent.REFRESH)
        new = await plugin.refresh(credential)
        if os.environ.get(FAULT_ENV) == "crash-after-refresh":  # fault injection (tests)
            os._exit(97)
        self.refreshes += 1
        try:
            link = await self.vault.replace_credential(link_id, expected_version=link.version,
                                                       credential=new, event=AuditEvent.REFRESH)
        except StaleVersion:  # another process saved first; theirs is as good as ours
            link = await self.vault.get_link_by_id(link_id) or link
            return await self.vault.read_credential(link_id), link
        return new, link


@dataclass
class HostContext:
    """What the driver needs from the host."""

    vault: AsyncVault
    local: LocalSession
    keeper: CredentialKeeper


def _snapshot(link: Link | None, way: str = "") -> r.LinkSnapshot | None:
    if link is None:
        return None
    return r.LinkSnapshot(link.id, link.remote_account_id, link.remote_account_name,
                          str(link.state), link.state_reason, link.target_app, way)


async def _ways(plugin: Plugin, link: Link | None, target: Target,
                via: LinkWay | None) -> tuple[LinkWay, ...]:
    """The ways the target offers: asked of the plug-in (it may look at the server) only
    when a sign-in is likely; else what its spec declares."""
    static = plugin.spec.ways()
    likely = via is not None or link is None or link.state not in USABLE_STATES
    if not likely or (target.account_system == "shared" and plugin.spec.supports_assertion):
        return static
    try:
        return tuple(await plugin.available_link_ways())
    except InterappError:  # unreachable now: the flow finds out and says so
        return static


async def _remember_way(ctx: HostContext, link: Link | None, way: LinkWay) -> None:
    if link is not None:
        await ctx.vault.put_secret(_names.link_way(link.id), Secret(str(way)))


async def _login_event(call: object) -> tuple[r.Event, Profile | None]:
    try:
        login: Login = await call  # type: ignore[misc]
    except (NeedsReauth, Unauthorized) as exc:
        return r.LoginRefused(exc.message), None
    except RateLimited as exc:
        wait = f" (retry in {int(exc.retry_after)} s)" if exc.retry_after else ""
        return r.LoginRefused(f"{exc.message}{wait}"), None
    except ConnectionLost as exc:
        return r.TargetUnavailable(exc.message), None
    profile = Profile(login.remote_account_id, login.remote_account_name,
                      login.remote_account_name)
    return r.LoginSucceeded(login.remote_account_id, login.remote_account_name,
                            login.credential), profile


async def _stored_login(ctx: HostContext, plugin: Plugin, link: Link) -> tuple[r.Event,
                                                                               Profile | None]:
    try:
        credential, current = await ctx.keeper.fresh(link.id, plugin)
        try:
            profile = await plugin.open(credential)
        except Unauthorized:
            if not plugin.spec.supports_refresh:
                raise
            credential, current = await ctx.keeper.fresh(link.id, plugin, force=True,
                                                         seen_version=current.version)
            profile = await plugin.open(credential)
    except (NeedsReauth, Unauthorized) as exc:
        return r.LoginRefused(exc.message), None
    except ConnectionLost as exc:
        return r.TargetUnavailable(exc.message), None
    except RateLimited as exc:  # says nothing about the credential: like an outage
        wait = f" (retry in {int(exc.retry_after)} s)" if exc.retry_after else ""
        return r.TargetUnavailable(f"rate limited{wait}"), None
    if profile.id != link.remote_account_id:
        return r.LoginRefused("the stored credential now belongs to another account"), None
    return r.LoginSucceeded(profile.id, profile.username, credential), profile


async def connect_target(ctx: HostContext, target: Target, plugin: Plugin, prompter: Prompter,
                         *, max_attempts: int = 3,
                         requested_account: str | None = None,
                         via: LinkWay | str | None = None) -> Outcome:
    """Run the claim-1 flow for ``target``; never raises for a flow failure (see Outcome).

    ``via`` asks for a link way (``browser``, ``device``, ``password``) should the user have
    to sign in; by default the resolver picks the most secure one offered."""
    local = ctx.local.local
    if local.username is None:
        raise NotSignedIn("nobody is signed in to the local application")
    link = await ctx.vault.get_link(local.issuer, local.username, target.name)
    spec = plugin.spec
    wanted = LinkWay(via) if via is not None else None
    face = face_ways(prompter)
    # a face that can only take a password (scripted answers, no face) needs no look at what
    # the server offers: the flow is exactly as before the other ways existed
    offered = (spec.ways() if face == (LinkWay.PASSWORD,) and wanted is None
               else await _ways(plugin, link, target, wanted))
    usable = tuple(w for w in offered if w in face and (w is not LinkWay.PASSWORD
                                                         or spec.account_fields))
    remembered = await ctx.vault.get_secret(_names.link_way(link.id)) if link else None
    machine = r.Resolver(r.ResolveRequest(
        target=target.name, account_system=target.account_system,
        supports_assertion=spec.supports_assertion, local_issuer=local.issuer,
        local_account=local.username,
        link=_snapshot(link, remembered.reveal() if remembered else ""),
        prompt_fields=spec.account_fields,
        interactive=prompter.interactive, max_attempts=max_attempts,
        requested_account=requested_account, server=target.server,
        ways=usable, offered_ways=offered, requested_way=wanted,
        headless=bool(getattr(prompter, "headless", False))))
    actions = machine.start()
    profile: Profile | None = None
    stored_link = link
    completion: LinkCompletion | None = None
    try:
        while True:
            event: r.Event | None = None
            for action in actions:
                if isinstance(action, r.RequestAssertion):
                    try:
                        audience = await plugin.audience()
                        assertion = await ctx.local.assertion_for(audience)
                        event = r.AssertionObtained(assertion)
                    except ConnectionLost as exc:
                        event = r.TargetUnavailable(exc.message)
                    except InterappError as exc:
                        event = r.AssertionRefused(exc.message)
                elif isinstance(action, r.LoginWithAssertion):
                    event, profile = await _login_event(
                        plugin.login_with_assertion(action.assertion))
                elif isinstance(action, r.LoginWithStoredCredential):
                    assert stored_link is not None
                    event, profile = await _stored_login(ctx, plugin, stored_link)
                elif isinstance(action, r.Prompt):
                    try:
                        answers = await prompter.ask(PromptRequest(
                            target.name, action.fields, action.reason, action.attempt,
                            action.max_attempts, action.expected_account, action.reason_code,
                            action.cause))
                        event = r.PromptDeclined() if answers is None else r.PromptAnswered(answers)
                    except PromptUnavailable:
                        event = r.PromptUnavailable()
                elif isinstance(action, r.LoginWithAnswers):
                    event, profile = await _login_event(plugin.login(action.answers))
                elif isinstance(action, r.Authorize):
                    completion = LinkCompletion()
                    way = _linkways.browser if action.way is LinkWay.BROWSER else _linkways.device
                    event, profile = await way(plugin, prompter, target.name, action, completion)
                elif isinstance(action, r.MarkLink):
                    stored_link = await ctx.vault.set_state(action.link_id, action.state,
                                                            action.reason)
                elif isinstance(action, r.StoreLink):
                    assert isinstance(action.credential, Credential)
                    stored_link = await ctx.vault.create_link(
                        local_app=local.issuer, local_account=local.username, target=target.name,
                        target_app=target.server, remote_account_id=action.remote_account_id,
                        remote_account_name=action.remote_account_name,
                        credential=action.credential)
                    await _remember_way(ctx, stored_link, action.way)
                elif isinstance(action, r.RepairLink):
                    assert isinstance(action.credential, Credential)
                    stored_link = await ctx.vault.repair_link(
                        action.link_id, remote_account_id=action.remote_account_id,
                        remote_account_name=action.remote_account_name,
                        credential=action.credential)
                    await _remember_way(ctx, stored_link, action.way)
                elif isinstance(action, r.RevokeCredential):
                    assert isinstance(action.credential, Credential)
                    with contextlib.suppress(InterappError):
                        await plugin.revoke(action.credential)
                elif isinstance(action, r.RecordAudit):
                    await ctx.vault.record(AuditEvent.PROMPT, link_id=None, target=target.name,
                                           detail={"step": action.event, **action.detail})
                elif isinstance(action, r.Connected):
                    assert profile is not None
                    if action.branch is not r.Branch.SHARED and stored_link is not None:
                        stored_link = await ctx.vault.get_link_by_id(stored_link.id)
                    if completion is not None:
                        completion.finish(True)
                    return Outcome(Connection(target, plugin, action.branch,
                                              None if action.branch is r.Branch.SHARED
                                              else stored_link, profile, machine.explain(),
                                              action.way, action.way_reason),
                                   None, machine.explain())
                elif isinstance(action, r.Failed):
                    if completion is not None:
                        completion.finish(False)
                    return Outcome(None, action.to_error(), machine.explain())
            if event is None:
                raise InterappError("resolver stopped without a terminal action")
            actions = machine.send(event)
    finally:  # a face waiting on the completion always hears the end
        if completion is not None:
            completion.finish(False)
