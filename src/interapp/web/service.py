"""What the web UI does with the host: the same operations as the CLI, kept alive in one loop.

Theory of operation: :class:`UIService` holds one :class:`~interapp.host.Host` on the data
folder the CLI uses (same ``local.toml``, ``targets.toml`` and vault), so what one face does the
other shows; it uses nothing but the host's public API. It subscribes to the host's events and
turns them into updates for the pages (:class:`~interapp.web.live.Broadcaster`), keeping a buddy
cache with presence. A watcher reloads the configuration and the links every few seconds: a
change made by the CLI (a new link, an unlink, a hand-edited ``targets.toml``) reaches the pages,
and a target that can connect *without a prompt* (a stored link, or the same account system) is
connected on its own. Prompts happen only when the user presses Connect or Re-link, or when a
live link stops being accepted (then the host asks again, through the page).

Sending is idempotent: the page gives each message a ``client_msg_id`` and may post it again
after a dropped connection; the host answers a repeat from memory and the target de-duplicates
by the same id, so a message is delivered once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from interapp.host import (
    PRESENCE_STATES,
    ConfigError,
    ConnectionLost,
    Host,
    InterappError,
    LinkInfo,
    LinkState,
    LocalUser,
    Message,
    NoInput,
    PluginTimeout,
    Secret,
    TargetInfo,
    UnlinkResult,
    events,
)
from interapp.web.live import Broadcaster, WebPrompter

log = logging.getLogger("interapp.web")
T = TypeVar("T")

PRESENCE = tuple(str(s) for s in PRESENCE_STATES)
CLIENT_MSG_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_BODY = 4000
PAGE = 30
WATCH_EVERY = 2.0
AUTO_RETRY = 30.0
USABLE = (LinkState.LINKED, LinkState.DEGRADED)


class Retryable(InterappError):
    """The target cannot take this now (not connected, unreachable): try again later."""

    code = "try_again"
    status = 503


@dataclass
class TargetView:
    """One target as the targets list shows it."""

    name: str
    plugin: str
    server: str
    account_system: str
    link_state: str  # linked | degraded | needs_reauth | revoked | not linked
    reason: str
    remote_account: str | None
    connected: bool
    busy: bool
    problem: str
    branch: str

    @property
    def can_connect(self) -> bool:
        """Connect is offered when not connected and not connecting."""
        return not self.connected and not self.busy and not self.needs_relink

    @property
    def needs_relink(self) -> bool:
        """The link exists but the target no longer accepts it."""
        return self.link_state in (LinkState.NEEDS_REAUTH, LinkState.REVOKED)

    @property
    def has_link(self) -> bool:
        """A stored link exists (so it can be unlinked)."""
        return self.link_state != "not linked"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the JSON API."""
        return {"name": self.name, "plugin": self.plugin, "server": self.server,
                "account_system": self.account_system, "link_state": self.link_state,
                "reason": self.reason, "remote_account": self.remote_account,
                "connected": self.connected, "busy": self.busy, "problem": self.problem,
                "branch": self.branch}


@dataclass
class BuddyView:
    """One buddy with the presence last seen."""

    target: str
    username: str
    display_name: str
    presence: str
    status_text: str

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the JSON API and the pages."""
        return {"target": self.target, "username": self.username,
                "display_name": self.display_name, "presence": self.presence,
                "status_text": self.status_text}


@dataclass
class LocalView:
    """The local application and who is signed in there."""

    configured: bool
    problem: str = ""
    server: str = ""
    issuer: str = ""
    username: str | None = None
    signed_in: bool = False


@dataclass
class BuddyGroup:
    """The buddies of one target."""

    target: str
    plugin: str
    account: str
    connected: bool = True
    buddies: list[BuddyView] = field(default_factory=list)


def message_dict(m: Message) -> dict[str, Any]:
    """A chat message as the pages see it."""
    return {"target": m.target, "id": m.id, "from": m.sender, "to": m.recipient,
            "body": m.body, "sent_at": m.sent_at, "client_msg_id": m.client_msg_id}


def _presence_rank(b: BuddyView) -> tuple[int, str]:
    return (1 if b.presence == "offline" else 0, b.display_name.lower())


class UIService:
    """The web UI's use of the host (see the module docstring)."""

    def __init__(self, host: Host, *, prompt_timeout: float = 300.0,
                 viewer_wait: float = 10.0, watch_every: float = WATCH_EVERY) -> None:
        self.host = host
        self.browsers = Broadcaster()
        self.prompter = WebPrompter(self.browsers, timeout=prompt_timeout,
                                    viewer_wait=viewer_wait)
        host.prompter = self.prompter  # a live link that is refused asks again, in the page
        self.watch_every = watch_every
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self.problems: dict[str, str] = {}
        self.buddies: dict[str, dict[str, BuddyView]] = {}
        self.me: dict[str, str] = {}
        self.my_presence: tuple[str, str] = ("online", "")
        self._links: dict[str, LinkInfo] = {}
        self._auto_tried: dict[str, tuple[str, float]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._signature: object = None
        self._user: str | None = None

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the event dispatcher and the watcher."""
        await self._refresh()
        self._background = [asyncio.create_task(self._dispatch(), name="ui-dispatch"),
                            asyncio.create_task(self._watch(), name="ui-watch")]

    async def stop(self) -> None:
        """Stop every task and close the host."""
        tasks = [*self._background, *self.jobs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.jobs.clear()
        await self.host.aclose()

    # --- the local application ------------------------------------------------------------

    def local_view(self) -> LocalView:
        """Whether a local app is configured and someone is signed in (CLI or UI)."""
        local = self.host.local
        if local is None:
            return LocalView(configured=False, problem="no local application is configured "
                             "yet: run 'interapp local --server URL --client-id ID'")
        return LocalView(True, "", local.server, local.issuer, local.username,
                         self.host.signed_in is not None)

    async def sign_in(self, username: str, password: Secret) -> LocalUser:
        """``interapp login``: sign in to the local app; connections of another user end."""
        me = await self.host.sign_in(username, password)
        await self._refresh()
        self.browsers.publish({"type": "targets"})
        return me

    async def sign_out(self) -> None:
        """Forget the local session (the CLI is signed out too: it is the same vault)."""
        await self.host.sign_out()
        await self._refresh()
        self.browsers.publish({"type": "targets"})

    def _forget(self) -> None:
        self.buddies.clear()
        self.me.clear()
        self.problems.clear()
        self._auto_tried.clear()
        self._links.clear()

    # --- targets --------------------------------------------------------------------------

    def _view(self, t: TargetInfo | None, name: str) -> TargetView:
        ln = self._links.get(name)
        job = self.jobs.get(name)
        problem = self.problems.get(name, "")
        if t is None:
            problem = "no longer in targets.toml (unlink it, or add it back)"
        elif not problem and t.state in ("failed", "needs_reauth", "degraded") and t.problem:
            problem = t.problem
        connected = t is not None and t.state in ("connected", "degraded") and \
            t.account is not None
        reason = ln.reason if ln else ""
        if ln is not None and ln.server_changed:
            reason = f"made with {ln.server}; the target now names another server"
        return TargetView(
            name=name, plugin=t.plugin if t else "?", server=t.server if t else "",
            account_system=t.account_system if t else "separate",
            link_state=str(ln.state) if ln else "not linked", reason=reason,
            remote_account=ln.remote_account if ln else (t.account if t else None),
            connected=connected, busy=(job is not None and not job.done()) or
            (t is not None and t.state == "connecting"),
            problem=problem, branch=str(t.branch) if t and t.branch else "")

    def targets(self) -> list[TargetView]:
        """Every configured target (and any linked one no longer configured)."""
        configured = {t.name: t for t in self.host.targets()}
        return [self._view(configured.get(n), n)
                for n in sorted(set(configured) | set(self._links))]

    def start_connect(self, name: str, *, auto: bool = False) -> bool:
        """Connect (or re-link) ``name`` in the background; False when already under way."""
        self.host.target(name)  # NotFoundError for an unknown target
        job = self.jobs.get(name)
        if job is not None and not job.done():
            return False
        self.problems.pop(name, None)
        self.jobs[name] = asyncio.create_task(self._connect(name, auto), name=f"connect-{name}")
        self.browsers.publish({"type": "targets"})
        return True

    async def _connect(self, name: str, auto: bool) -> None:
        failure: str | None = None
        try:
            c = await self.host.connect(name, NoInput() if auto else self.prompter,
                                        reconnect=not auto)  # Re-link: the flow runs again
            self.me[name] = c.account
            await self._load_buddies(name)
            if not auto:
                self.browsers.publish({"type": "notice", "level": "ok",
                                       "text": f"connected to {name} as {c.account}"})
        except InterappError as exc:
            failure = exc.message
        except Exception as exc:  # a plug-in bug must not kill the UI
            log.exception("connecting %s failed", name)
            failure = f"{type(exc).__name__}"
        finally:
            self.jobs.pop(name, None)
        if failure is not None:
            self.problems[name] = failure
            if not auto:
                self.browsers.publish({"type": "notice", "level": "error",
                                       "text": f"{name}: {failure}"})
        await self._refresh_links()
        self.browsers.publish({"type": "targets"})
        self.browsers.publish({"type": "buddies"})

    async def unlink(self, name: str) -> UnlinkResult:
        """``interapp unlink``: revoke at the target, then destroy the local credential."""
        job = self.jobs.pop(name, None)
        if job is not None:
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
        try:
            return await self.host.unlink(name)
        finally:
            self.buddies.pop(name, None)
            self.me.pop(name, None)
            self.problems.pop(name, None)
            self._auto_tried[name] = ("unlinked", time.monotonic())
            await self._refresh_links()
            self.browsers.publish({"type": "targets"})
            self.browsers.publish({"type": "buddies"})

    def link_of(self, name: str) -> LinkInfo | None:
        """The stored link of ``name`` for the signed-in user (as last read)."""
        return self._links.get(name)

    # --- watching the configuration and the vault -------------------------------------------

    async def _refresh_links(self) -> None:
        self._links = {ln.target: ln for ln in await self.host.links()} \
            if self.host.signed_in else {}

    async def _refresh(self) -> None:
        await self.host.reload()
        if self.host.signed_in != self._user:  # 'interapp login' as someone else
            self._user = self.host.signed_in
            self._forget()
        await self._refresh_links()

    async def _watch(self) -> None:
        while True:
            try:
                await self.tick()
            except InterappError:
                pass  # no local app yet, or a broken hand edit: the page shows it
            except Exception:
                log.exception("watching the configuration failed")
            await asyncio.sleep(self.watch_every)

    async def tick(self) -> None:
        """Publish changes made elsewhere; connect what needs no prompt."""
        await self._refresh()
        if self.host.signed_in is None:
            return
        for v in self.targets():
            key = f"{v.link_state}:{v.account_system}"
            auto_ok = v.link_state in USABLE or (v.account_system == "shared"
                                                 and not v.has_link)
            if v.connected or v.busy or not auto_ok:
                continue
            tried = self._auto_tried.get(v.name)
            if v.plugin == "?" or (tried is not None and tried[0] == key and (
                    v.link_state not in USABLE or time.monotonic() - tried[1] < AUTO_RETRY)):
                continue  # a stored link is retried now and then (the target may be back)
            self._auto_tried[v.name] = (key, time.monotonic())
            self.start_connect(v.name, auto=True)
        signature = [v.as_dict() for v in self.targets()]
        if signature != self._signature:
            self._signature = signature
            self.browsers.publish({"type": "targets"})
            self.browsers.publish({"type": "buddies"})

    # --- buddies and events ---------------------------------------------------------------

    async def _load_buddies(self, name: str) -> None:
        found = await self.call(self.host.buddies(name))
        self.buddies[name] = {b.username: BuddyView(name, b.username, b.display_name,
                                                    str(b.presence), b.status_text)
                              for b in found}

    def buddy_groups(self) -> list[BuddyGroup]:
        """One buddy list across the targets, grouped by target (also while reconnecting)."""
        infos = {t.name: t for t in self.host.targets()}
        connected = {n for n, t in infos.items() if t.account is not None}
        groups = []
        for name in sorted(connected | set(self.buddies)):
            t = infos.get(name)
            group = BuddyGroup(name, t.plugin if t else "",
                               (t.account if t else None) or self.me.get(name, ""),
                               connected=t is not None and t.state == "connected")
            group.buddies = sorted(self.buddies.get(name, {}).values(), key=_presence_rank)
            groups.append(group)
        return groups

    async def _dispatch(self) -> None:
        async with self.host.events() as stream:
            async for event in stream:
                try:
                    await self._handle(event)
                except Exception:
                    log.exception("handling a %s event of %s failed", event.kind, event.target)

    async def _handle(self, event: events.Event) -> None:
        name = event.target
        match event:
            case events.MessageReceived(message=m):
                self.browsers.publish({"type": "message", "message": message_dict(m)})
            case events.BuddyPresence(own=True, state=state, status_text=text):
                self.browsers.publish({"type": "self_presence", "target": name,
                                       "state": str(state), "status_text": text})
            case events.BuddyPresence(username=username, state=state, status_text=text,
                                      previous=before):
                known = self.buddies.setdefault(name, {})
                buddy = known.get(username)
                if buddy is None:
                    buddy = known[username] = BuddyView(name, username, username, "", "")
                buddy.presence, buddy.status_text = str(state), text
                self.browsers.publish({"type": "presence", "buddy": buddy.as_dict(),
                                       "came_online": before == "offline" and
                                       state != "offline"})
            case events.ContactAdded() | events.ContactRemoved():
                if self.host.target(name).account is not None:
                    await self._load_buddies(name)
                self.browsers.publish({"type": "buddies"})
            case events.CursorReset():
                self.browsers.publish({"type": "notice", "level": "error", "text":
                                       f"{name} no longer knew where this app left off (its "
                                       f"data may have been reset): events in between may be "
                                       "missing"})
            case events.ContactRequest(username=who):
                self.browsers.publish({"type": "notice", "level": "info", "text":
                                       f"{who} asks to be your buddy on {name} "
                                       f"(interapp contacts accept {name} {who})"})
            case events.LinkNeedsReauth(reason=why) | events.TargetDegraded(reason=why):
                self.problems[name] = why
                if isinstance(event, events.LinkNeedsReauth):
                    self.browsers.publish({"type": "notice", "level": "error",
                                           "text": f"{name}: {why}"})
                await self._refresh_links()
                self.browsers.publish({"type": "targets"})
                self.browsers.publish({"type": "buddies"})
            case events.TargetConnected():
                self.problems.pop(name, None)
                self.browsers.publish({"type": "targets"})

    # --- calls into connected targets -----------------------------------------------------

    async def call(self, work: Awaitable[T]) -> T:
        """Await a host call; a target that cannot take it now is ``Retryable`` (503)."""
        try:
            return await work
        except (ConnectionLost, PluginTimeout) as exc:
            raise Retryable(exc.message) from exc

    async def history(self, name: str, user: str, before: str | None,
                      limit: int = PAGE) -> dict[str, Any]:
        """The conversation with ``user``, newest last; ``next_before`` pages back."""
        if self.host.target(name).account is None:
            raise Retryable(f"{name} is not connected")
        found = await self.call(self.host.history(name, user, limit=limit + 1, before=before))
        page = found[-limit:]
        more = len(found) > limit
        return {"messages": [message_dict(m) for m in page],
                "next_before": page[0].id if more and page else None}

    async def send(self, name: str, to: str, body: str, client_msg_id: str) -> dict[str, Any]:
        """Send once per ``client_msg_id`` (a repeat gets the first answer)."""
        if not CLIENT_MSG_ID.match(client_msg_id):
            raise ConfigError("client_msg_id must be 8-64 letters, digits, - or _")
        if not body.strip():
            raise ConfigError("the message is empty")
        if len(body) > MAX_BODY:
            raise ConfigError(f"the message is longer than {MAX_BODY} characters")
        if self.host.target(name).account is None:
            raise Retryable(f"{name} is not connected")
        msg = await self.call(self.host.send(name, to, body, client_msg_id=client_msg_id))
        return message_dict(msg)

    async def set_presence(self, state: str, text: str) -> dict[str, Any]:
        """``interapp status``: presence and status text on every connected target."""
        if state not in PRESENCE:
            raise ConfigError(f"state must be one of {', '.join(PRESENCE)}")
        if len(text) > 200:
            raise ConfigError("the status text is longer than 200 characters")
        result = await self.host.set_presence(state, text)
        self.my_presence = (state, text)
        return result.to_dict()

    def target_of(self, name: str) -> TargetInfo:
        """The configured target ``name`` (NotFoundError listing the known ones)."""
        return self.host.target(name)
