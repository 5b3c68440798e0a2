"""What the web UI does with the host: the same operations as the CLI, kept alive in one loop.

Theory of operation: :class:`UIService` owns one :class:`~interapp.host.runtime.Host` on the data
folder the CLI uses (same ``local.toml``, ``targets.toml`` and vault), so what one face does the
other shows. For every connected target it runs :meth:`Host.stream` into one queue; a
dispatcher turns those events into updates for the pages (:class:`~interapp.web.live.Broadcaster`)
and keeps a buddy cache with presence. A watcher looks at the configuration and the vault every
few seconds: a change made by the CLI (a new link, an unlink, a hand-edited ``targets.toml``)
reaches the pages, and a target that can connect *without a prompt* (a stored link, or the same
account system) is connected on its own. Prompts happen only when the user presses Connect or
Re-link, or when a live link stops being accepted (then the host asks again, as the CLI would).

Sending is idempotent: the page gives each message a ``client_msg_id`` and may post it again
after a dropped connection; the service answers a repeat from memory and the target
de-duplicates by the same id, so a message is delivered once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from interapp.errors import (
    ConfigError,
    ConnectionLost,
    InterappError,
    PluginTimeout,
    Unauthorized,
)
from interapp.host.config import Target
from interapp.host.driver import Connection
from interapp.host.localapp import SESSION
from interapp.host.prompts import NoInput
from interapp.host.runtime import Host, WatchEvent
from interapp.plugins.contract import ChatMessage
from interapp.secret import Secret
from interapp.vault import Link, LinkState
from interapp.web.live import Broadcaster, WebPrompter

log = logging.getLogger("interapp.web")
T = TypeVar("T")

PRESENCE = ("online", "away", "busy", "offline")
CLIENT_MSG_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_BODY = 4000
PAGE = 30
HISTORY_WINDOW = 200
WATCH_EVERY = 2.0
AUTO_RETRY = 30.0
SENT_MEMORY = 2000
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


def message_dict(target: str, m: ChatMessage) -> dict[str, Any]:
    """A chat message as the pages see it."""
    return {"target": target, "id": m.id, "from": m.sender, "to": m.recipient, "body": m.body,
            "sent_at": m.sent_at, "client_msg_id": m.client_msg_id}


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
        self.watch_every = watch_every
        self.events: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self.streams: dict[str, asyncio.Task[None]] = {}
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self.problems: dict[str, str] = {}
        self.buddies: dict[str, dict[str, BuddyView]] = {}
        self.me: dict[str, str] = {}
        self.my_presence: tuple[str, str] = ("online", "")
        self._auto_tried: dict[str, tuple[str, float]] = {}
        self._sent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._send_locks: dict[str, asyncio.Lock] = {}
        self._background: list[asyncio.Task[None]] = []
        self._signature: object = None

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the dispatcher and the watcher."""
        self._background = [asyncio.create_task(self._dispatch(), name="ui-dispatch"),
                            asyncio.create_task(self._watch(), name="ui-watch")]

    async def stop(self) -> None:
        """Stop every task and close the host."""
        tasks = [*self._background, *self.streams.values(), *self.jobs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.streams.clear()
        self.jobs.clear()
        await self.host.aclose()

    # --- the local application ------------------------------------------------------------

    def local_view(self) -> LocalView:
        """Whether a local app is configured and someone is signed in (CLI or UI)."""
        try:
            local = self.host.config.local()
        except ConfigError as exc:
            return LocalView(configured=False, problem=exc.message)
        signed_in = local.username is not None and \
            self.host.vault.get_secret(SESSION) is not None
        session = self.host.local
        if (session.local.server, session.local.client_id) != (local.server, local.client_id):
            return LocalView(configured=False, problem=(
                "the local application was changed ('interapp local') while the UI runs: "
                "restart 'interapp ui'"))
        if session.local.username != local.username:  # 'interapp login' as someone else
            session.local = local
            self._forget_connections()
        return LocalView(True, "", local.server, local.issuer, local.username, signed_in)

    async def sign_in(self, username: str, password: Secret) -> dict[str, Any]:
        """``interapp login``: log in to the local app; connections of another user end."""
        before = self.host.config.local().username
        me = await self.host.login(username, password)
        if me.get("username") != before:
            await self._reset()
        self._auto_tried.clear()
        self.browsers.publish({"type": "targets"})
        return me

    async def sign_out(self) -> None:
        """Forget the local session (the CLI is signed out too: it is the same vault)."""
        await self._reset()
        self.host.local.logout()
        self.browsers.publish({"type": "targets"})

    async def _reset(self) -> None:
        for name in list(self.streams) + list(self.jobs):
            await self._stop_tasks(name)
        self._forget_connections()

    def _forget_connections(self) -> None:
        for name in list(self.streams):
            self.streams.pop(name).cancel()
        self.host.connections.clear()
        self.buddies.clear()
        self.me.clear()
        self.problems.clear()
        self._auto_tried.clear()

    # --- targets --------------------------------------------------------------------------

    def _links(self) -> dict[str, Link]:
        local = self.host.config.local()
        if local.username is None:
            return {}
        return {str(ln.target): ln
                for ln in self.host.vault.list_links(local.issuer, local.username)}

    def targets(self) -> list[TargetView]:
        """Every configured target (and any linked one no longer configured)."""
        configured = self.host.config.targets()
        links = self._links()
        views = []
        for name in sorted(set(configured) | set(links)):
            t, ln = configured.get(name), links.get(name)
            conn = self.host.connections.get(name)
            job = self.jobs.get(name)
            problem = self.problems.get(name, "")
            state = self.host.states.get(name, "")
            if not problem and state.startswith("plugin_"):
                problem = state.replace("_", " ")
            if t is None:
                problem = "no longer in targets.toml (unlink it, or add it back)"
            views.append(TargetView(
                name=name, plugin=t.plugin if t else "?", server=t.server if t else "",
                account_system=t.account_system if t else "separate",
                link_state=str(ln.state) if ln else "not linked",
                reason=ln.state_reason if ln else "",
                remote_account=ln.remote_account_name if ln else
                (conn.profile.username if conn else None),
                connected=conn is not None, busy=job is not None and not job.done(),
                problem=problem, branch=str(conn.branch) if conn else ""))
        return views

    def start_connect(self, name: str, *, auto: bool = False) -> bool:
        """Connect (or re-link) ``name`` in the background; False when already under way."""
        self.host.config.target(name)  # NotFoundError for an unknown target
        job = self.jobs.get(name)
        if job is not None and not job.done():
            return False
        self.problems.pop(name, None)
        self.jobs[name] = asyncio.create_task(self._connect(name, auto), name=f"connect-{name}")
        self.browsers.publish({"type": "targets"})
        return True

    async def _connect(self, name: str, auto: bool) -> None:
        stream = self.streams.pop(name, None)
        if stream is not None:
            stream.cancel()
            await asyncio.gather(stream, return_exceptions=True)
        failure: str | None = None
        try:
            outcome = await self.host.connect(name, NoInput() if auto else self.prompter)
            if outcome.connection is None:
                assert outcome.failure is not None
                failure = outcome.failure.message
            else:
                conn = outcome.connection
                self.me[name] = conn.profile.username
                await self._load_buddies(name)
                self._start_stream(name)
                if not auto:
                    self.browsers.publish({"type": "notice", "level": "ok", "text":
                                           f"connected to {name} as {conn.profile.username}"})
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
        self.browsers.publish({"type": "targets"})
        self.browsers.publish({"type": "buddies"})

    def _start_stream(self, name: str) -> None:
        self.streams[name] = asyncio.create_task(self._stream(name), name=f"stream-{name}")

    async def _stream(self, name: str) -> None:
        try:
            await self.host.stream(name, self.prompter, self.events)
        except InterappError as exc:  # needs re-authentication, or a failed re-connect
            self.problems[name] = exc.message
            self.host.connections.pop(name, None)
            self.buddies.pop(name, None)
            self.browsers.publish({"type": "notice", "level": "error",
                                   "text": f"{name}: {exc.message}"})
            self.browsers.publish({"type": "targets"})
            self.browsers.publish({"type": "buddies"})
        finally:
            if self.streams.get(name) is asyncio.current_task():
                self.streams.pop(name, None)

    async def _stop_tasks(self, name: str) -> None:
        tasks = [t for t in (self.streams.pop(name, None), self.jobs.pop(name, None)) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def unlink(self, name: str) -> tuple[bool | None, str]:
        """``interapp unlink``: revoke at the target, then destroy the local credential."""
        await self._stop_tasks(name)
        try:
            return await self.host.unlink(name)
        finally:
            self.host.connections.pop(name, None)
            self.buddies.pop(name, None)
            self.me.pop(name, None)
            self.problems.pop(name, None)
            self._auto_tried[name] = ("unlinked", time.monotonic())
            self.browsers.publish({"type": "targets"})
            self.browsers.publish({"type": "buddies"})

    def link_of(self, name: str) -> Link | None:
        """The stored link of ``name`` for the signed-in user."""
        return self._links().get(name)

    # --- watching the configuration and the vault -------------------------------------------

    async def _watch(self) -> None:
        while True:
            try:
                self.tick()
            except InterappError:
                pass  # no local app yet, or a broken hand edit: the page shows it
            except Exception:
                log.exception("watching the configuration failed")
            await asyncio.sleep(self.watch_every)

    def tick(self) -> None:
        """Publish changes made elsewhere; connect what needs no prompt."""
        local = self.local_view()
        if not local.signed_in:
            return
        views = self.targets()
        for v in views:
            key = f"{v.link_state}:{v.account_system}"
            auto_ok = v.link_state in USABLE or (v.account_system == "shared"
                                                 and not v.has_link)
            if v.connected or v.busy or v.name in self.streams or not auto_ok:
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
        found = await self.call(name, lambda c: c.plugin.buddies())
        self.buddies[name] = {b.username: BuddyView(name, b.username, b.display_name,
                                                    b.presence, b.status_text) for b in found}

    def buddy_groups(self) -> list[BuddyGroup]:
        """One buddy list across the targets, grouped by target (also while reconnecting)."""
        groups = []
        for name in sorted(set(self.host.connections) | set(self.buddies)):
            conn = self.host.connections.get(name)
            plugin = conn.target.plugin if conn else ""
            group = BuddyGroup(name, plugin, conn.profile.username if conn else
                               self.me.get(name, ""), connected=conn is not None)
            group.buddies = sorted(self.buddies.get(name, {}).values(), key=_presence_rank)
            groups.append(group)
        return groups

    async def _dispatch(self) -> None:
        while True:
            item = await self.events.get()
            try:
                await self._handle(item)
            except Exception:
                log.exception("handling a %s event of %s failed", item.event.type, item.target)

    async def _handle(self, item: WatchEvent) -> None:
        data, name, kind = item.event.data, item.target, item.event.type
        if kind == "message":
            self.browsers.publish({"type": "message", "message": {
                "target": name, "id": str(data.get("message_id", "")),
                "from": str(data.get("from", "")), "to": str(data.get("to", "")),
                "body": str(data.get("body", "")), "sent_at": str(data.get("sent_at", "")),
                "client_msg_id": data.get("client_msg_id")}})
        elif kind == "presence":
            username = str(data.get("username", ""))
            state, text = str(data.get("state", "offline")), str(data.get("status_text", ""))
            if username == self.me.get(name):
                self.browsers.publish({"type": "self_presence", "target": name,
                                       "state": state, "status_text": text})
                return
            known = self.buddies.setdefault(name, {})
            buddy = known.get(username)
            before = buddy.presence if buddy else "offline"
            if buddy is None:
                buddy = known[username] = BuddyView(name, username, username, state, text)
            buddy.presence, buddy.status_text = state, text
            self.browsers.publish({"type": "presence", "buddy": buddy.as_dict(),
                                   "came_online": before == "offline" and state != "offline"})
        elif kind in ("contact_added", "contact_removed", "contact_accepted"):
            if name in self.host.connections:
                await self._load_buddies(name)
            self.browsers.publish({"type": "buddies"})
        elif kind == "cursor_reset":
            self.browsers.publish({"type": "notice", "level": "error", "text":
                                   f"{name} no longer knew where this app left off (its data "
                                   f"may have been reset): events in between may be missing"})
        elif kind == "contact_request":
            self.browsers.publish({"type": "notice", "level": "info", "text":
                                   f"{data.get('from')} asks to be your buddy on {name} "
                                   f"(interapp contacts accept {name} {data.get('from')})"})

    # --- calls into connected targets -----------------------------------------------------

    async def call(self, name: str, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``work`` on ``name``'s live connection; an expired token is refreshed once."""
        conn = self.host.connections.get(name)
        if conn is None:
            raise Retryable(f"{name} is not connected")
        try:
            return await self.host.supervised(name, work(conn))
        except Unauthorized:
            self.host.connections.pop(name, None)
            conn = await self.host.connection(name, NoInput())  # stored link: refresh, no prompt
            return await self.host.supervised(name, work(conn))
        except (ConnectionLost, PluginTimeout) as exc:
            raise Retryable(exc.message) from exc

    async def history(self, name: str, user: str, before: str | None,
                      limit: int = PAGE) -> dict[str, Any]:
        """The conversation with ``user``, newest last; ``next_before`` pages back."""

        async def fetch(conn: Connection) -> list[ChatMessage]:
            history: Callable[..., Awaitable[list[ChatMessage]]] = conn.plugin.history
            if "before" in inspect.signature(history).parameters:
                return await history(user, limit=limit + 1, before=before)
            window = await history(user, limit=HISTORY_WINDOW)  # older plug-in contract
            if before is not None:
                ids = [m.id for m in window]
                window = window[:ids.index(before)] if before in ids else []
            return window[-(limit + 1):]

        found = await self.call(name, fetch)
        page = found[-limit:]
        more = len(found) > limit
        return {"messages": [message_dict(name, m) for m in page],
                "next_before": page[0].id if more and page else None}

    async def send(self, name: str, to: str, body: str, client_msg_id: str) -> dict[str, Any]:
        """Send once per ``client_msg_id`` (a repeat gets the first answer)."""
        if not CLIENT_MSG_ID.match(client_msg_id):
            raise ConfigError("client_msg_id must be 8-64 letters, digits, - or _")
        if not body.strip():
            raise ConfigError("the message is empty")
        if len(body) > MAX_BODY:
            raise ConfigError(f"the message is longer than {MAX_BODY} characters")
        key = f"{name}\0{client_msg_id}"
        async with self._send_locks.setdefault(key, asyncio.Lock()):
            try:
                if key in self._sent:
                    return self._sent[key]
                msg = await self.call(name, lambda c: c.plugin.send(to, body, client_msg_id))
                out = message_dict(name, msg)
                self._sent[key] = out
                while len(self._sent) > SENT_MEMORY:
                    self._sent.popitem(last=False)
                return out
            finally:
                self._send_locks.pop(key, None)

    async def set_presence(self, state: str, text: str) -> dict[str, Any]:
        """``interapp status``: presence and status text on every connected target."""
        if state not in PRESENCE:
            raise ConfigError(f"state must be one of {', '.join(PRESENCE)}")
        if len(text) > 200:
            raise ConfigError("the status text is longer than 200 characters")
        names = sorted(self.host.connections)

        async def one(name: str) -> str | None:
            try:
                await self.call(name, lambda c: c.plugin.set_presence(
                    state, text))  # type: ignore[arg-type]
            except InterappError as exc:
                return exc.message
            return None

        results = dict(zip(names, await asyncio.gather(*(one(n) for n in names)), strict=True))
        self.my_presence = (state, text)
        return {"state": state, "status_text": text,
                "targets": [n for n, err in results.items() if err is None],
                "errors": {n: err for n, err in results.items() if err is not None}}

    def target_of(self, name: str) -> Target:
        """The configured target ``name`` (NotFoundError listing the known ones)."""
        return self.host.config.target(name)

