"""The agent: one long-lived host for the data folder, and every action of the local API.

Theory of operation
-------------------
:class:`Agent` owns one :class:`~interapp.host.Host` (nothing but its public API) and an
:class:`~interapp.agent.eventlog.EventLog`. Three tasks run for as long as it lives:

* the **pump** takes every event of ``host.events()`` (one stream per connected target; the
  façade reconnects with backoff and resumes from the saved cursor) and appends it to the log
  *before* asking for the next one — so a target's cursor is saved only once its event is on
  disk — then reacts: a connected target gets the presence the agent holds, a target whose link
  is refused gets a re-authentication (a prompt for whichever client is attached);
* the **keeper** reloads the configuration every ``tick`` seconds (hand edits, another
  process) and connects every target that can connect without asking (a usable stored link,
  or the same account system), retrying with exponential backoff;
* the **token refresher** re-reads the token file off the loop.

Every connect the agent makes uses :class:`~interapp.agent.prompts.AgentPrompter`: a prompt
becomes a ``prompt`` event and an answer to the client waiting on that connect
(``{"prompt": …}``); the answer to the prompt (``POST /agent/v1/prompts/{id}``) in turn waits
for what comes next — connected, the next attempt's prompt, or the error. Calls that name a
target (buddies, send, history …) never prompt: an unconnected target is connected without
asking, or the call fails with ``prompt_unavailable`` (connect it first).

The methods return JSON-ready data; :mod:`interapp.agent.api` maps them to routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from interapp import __version__
from interapp.agent import routes_rich
from interapp.agent.eventlog import EventLog
from interapp.agent.prompts import AgentPrompter, PendingPrompt
from interapp.host import (
    PRESENCE_STATES,
    Activity,
    ConfigError,
    ConnectResult,
    Host,
    InterappError,
    LinkInfo,
    LinkState,
    NeedsReauth,
    NoInput,
    NotSignedIn,
    PromptUnavailable,
    Secret,
    ShowCodeRequest,
    TargetInfo,
    TargetState,
    events,
    render_activity,
)

log = logging.getLogger("interapp.agent")
T = TypeVar("T")
TICK = 2.0
MAX_RETRY = 60.0
CONNECT_WAIT = 120.0
USABLE = (LinkState.LINKED, LinkState.DEGRADED)
REFUSED = (LinkState.NEEDS_REAUTH, LinkState.REVOKED)


@dataclass(frozen=True)
class Outcome:
    """What a connect came to: connected, a prompt to answer, or an error."""

    kind: Literal["connected", "prompt", "error"]
    data: dict[str, Any] | None = None
    error: InterappError | None = None

    def result(self) -> dict[str, Any]:
        """``{"connected": …}`` or ``{"prompt": …}``; raises the error."""
        if self.error is not None:
            raise self.error
        return {self.kind: self.data}


def _connected(result: ConnectResult) -> dict[str, Any]:
    out = result.to_dict()
    out["branch"] = str(result.branch)
    return out


def _dedup(event: events.Event, data: dict[str, Any]) -> str | None:
    cursor = getattr(event, "cursor", None)
    if cursor is None:
        return None  # the host's own events (degraded, needs reauth …) are never repeated
    body = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return f"{event.target}\0{cursor}\0{event.kind}\0{body[:32]}"


class Agent:
    """The agent's state and actions (see the module docstring)."""

    def __init__(self, host: Host, log_: EventLog, *, prompt_timeout: float = 300.0,
                 tick: float = TICK, refresh_tokens: Callable[[], Awaitable[None]] | None = None
                 ) -> None:
        self.host = host
        self.log = log_
        self.prompter = AgentPrompter(timeout=prompt_timeout, opened=self._prompt_opened,
                                      closed=self._prompt_closed)
        self.tick = tick
        self.started_at = datetime.now(UTC)
        self.presence: tuple[str, str] | None = None
        self.activity: tuple[Activity | None] | None = None  # held (routes_rich); None: never
        self._refresh_tokens = refresh_tokens
        self._links: dict[str, LinkInfo] = {}
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, list[asyncio.Future[Outcome]]] = {}
        self._retry: dict[str, tuple[float, float]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._side: set[asyncio.Task[Any]] = set()
        self._announced: dict[str, asyncio.Task[None]] = {}  # prompt id → its "prompt" event
        self._idle = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Read what the log holds, subscribe to the host's events, start the keeper."""
        held = await self.log.get_meta("presence")
        if held:
            data = json.loads(held)
            self.presence = (str(data["state"]), str(data["status_text"]))
        await routes_rich.load_held(self)
        await self._refresh_links()
        self._pump_task = asyncio.create_task(self._pump(), name="agent-pump")
        self._tasks = [self._pump_task,
                       asyncio.create_task(self._keep(), name="agent-keeper")]

    async def stop(self) -> None:
        """Set presence offline on the connected targets, stop, save the cursors."""
        connected = [t.name for t in self.host.targets() if t.state == TargetState.CONNECTED]
        if connected:
            with contextlib.suppress(InterappError, TimeoutError):
                await asyncio.wait_for(self.host.set_presence("offline", targets=connected), 10)
        with contextlib.suppress(TimeoutError):  # never cut an append short
            await asyncio.wait_for(self._idle.wait(), 10)
        tasks = [*self._tasks, *self._jobs.values(), *self._side]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.host.aclose()
        await self.log.close()

    def _spawn(self, coro: Awaitable[T]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    # --- the pump: host events → the log --------------------------------------------------

    async def _pump(self) -> None:
        async with self.host.events() as stream:
            while True:
                self._idle.set()
                try:
                    event = await anext(stream)
                except StopAsyncIteration:
                    return
                self._idle.clear()
                try:
                    await self._record(event)
                except Exception:  # the log must never stop taking events
                    log.exception("recording a %s event of %s failed", event.kind,
                                  event.target)

    async def _record(self, event: events.Event) -> None:
        data = event.to_dict()
        key = _dedup(event, data)  # of the event's own data, without the time it came
        data["at"] = datetime.now(UTC).isoformat()
        seq = await self.log.append(data, key)
        if seq is None:
            return  # re-delivered by the target after a restart: already handed out
        name = event.target
        match event:
            case events.TargetConnected():
                self._retry.pop(name, None)
                if self.presence is not None:
                    state, text = self.presence
                    self._spawn(self._quietly(self.host.set_presence(state, text,
                                                                     targets=[name])))
                if self.activity is not None:
                    self._spawn(self._quietly(self.host.set_activity(self.activity[0],
                                                                     targets=[name])))
                if name not in self._jobs:
                    info = self.host.target(name)
                    self._resolve(name, Outcome("connected", {
                        "target": name, "branch": str(event.branch), "account": event.account,
                        "account_id": "", "display_name": info.account or event.account,
                        "link": None, "explain": ""}))
            case events.LinkNeedsReauth(reason=why, account=account):
                await self._refresh_links()
                if name not in self._jobs:
                    error = NeedsReauth(why, target=name, account=account)
                    self._resolve(name, Outcome("error", error=error))
                    if self.prompter.for_target(name) is None:
                        self._start_job(name, reconnect=True)

    async def _quietly(self, work: Awaitable[Any]) -> None:
        with contextlib.suppress(InterappError):
            await work

    async def _publish(self, data: dict[str, Any]) -> None:
        data.setdefault("at", datetime.now(UTC).isoformat())
        await self.log.append(data)

    # --- prompts ------------------------------------------------------------------------------

    def _prompt_opened(self, prompt: PendingPrompt) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(self._announce(prompt))
        self._announced[prompt.id] = task
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    async def _announce(self, prompt: PendingPrompt) -> None:
        # the links as the prompt finds them first (a refused link is needs_reauth by now): a
        # client told of the prompt that asks for the state must see why it is asked; the
        # keeper's last read may be older than the refusal, and the pump's may come later
        await self._refresh_links()
        self._resolve(prompt.target, Outcome("prompt", prompt.describe()))
        await self._publish({"type": "prompt", "target": prompt.target,
                             "prompt": prompt.describe()})

    def _prompt_closed(self, prompt: PendingPrompt, outcome: str) -> None:
        self._spawn(self._announce_closed(prompt, outcome))

    async def _announce_closed(self, prompt: PendingPrompt, outcome: str) -> None:
        opened = self._announced.pop(prompt.id, None)
        if opened is not None:  # "prompt" goes out before its "prompt_closed"
            with contextlib.suppress(Exception):
                await opened
        await self._publish({"type": "prompt_closed", "target": prompt.target,
                             "id": prompt.id, "outcome": outcome})

    # --- waiting for a connect's outcome ----------------------------------------------------

    def _waiter(self, target: str) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(target, []).append(future)
        return future

    def _resolve(self, target: str, outcome: Outcome) -> None:
        for future in self._waiters.pop(target, []):
            if not future.done():
                future.set_result(outcome)

    async def _outcome(self, target: str, future: asyncio.Future[Outcome],
                       wait: float) -> dict[str, Any]:
        try:
            outcome = await asyncio.wait_for(future, wait)
        except TimeoutError:
            return {"pending": {"target": target,
                                "message": "still connecting: watch the events"}}
        finally:
            waiting = self._waiters.get(target, [])
            if future in waiting:
                waiting.remove(future)
        return outcome.result()

    def _start_job(self, name: str, *, account: str | None = None,
                   reconnect: bool = False, via: str | None = None,
                   can: list[str] | None = None, headless: bool = False) -> None:
        async def job() -> None:
            try:
                face = self.prompter.limited(can, headless=headless)
                result = await self.host.connect(name, face, account=account,
                                                 reconnect=reconnect, via=via)
                self._retry.pop(name, None)
                outcome = Outcome("connected", _connected(result))
            except InterappError as exc:
                if exc.target is None:
                    exc.target = name
                self._backoff(name, exc)
                outcome = Outcome("error", error=exc)
            except Exception as exc:  # a plug-in bug must not leave a client waiting
                log.exception("connecting %s failed", name)
                outcome = Outcome("error", error=InterappError(f"{name}: {type(exc).__name__}"))
            except BaseException:  # cancelled (unlink, remove, stop)
                self._jobs.pop(name, None)
                raise
            try:
                await self._refresh_links()  # before the answer: the state shows the link
                self._resolve(name, outcome)  # while still the job: it, not the event, answers
            finally:
                self._jobs.pop(name, None)

        self._jobs[name] = asyncio.create_task(job(), name=f"agent-connect-{name}")

    def _backoff(self, name: str, exc: InterappError) -> None:
        _, delay = self._retry.get(name, (0.0, TICK / 2))
        delay = min(delay * 2, MAX_RETRY)
        self._retry[name] = (time.monotonic() + delay, delay)

    # --- the keeper -------------------------------------------------------------------------

    async def _keep(self) -> None:
        while True:
            try:
                await self.keep_once()
            except InterappError:
                pass  # no local app yet, nobody signed in, a broken hand edit
            except Exception:
                log.exception("keeping the targets connected failed")
            await asyncio.sleep(self.tick)

    async def keep_once(self) -> None:
        """Reload the configuration; connect what can connect without asking."""
        if self._refresh_tokens is not None:
            await self._refresh_tokens()
        await self.host.reload()
        await self._refresh_links()
        if self.host.signed_in is None:
            return
        now = time.monotonic()
        for t in self.host.targets():
            if t.state in (TargetState.CONNECTED, TargetState.CONNECTING,
                           TargetState.DEGRADED) or t.name in self._jobs:
                continue
            link = self._links.get(t.name)
            usable = link is not None and link.state in USABLE and not link.server_changed
            if not usable and not (t.account_system == "shared" and link is None):
                continue
            if self._retry.get(t.name, (0.0, 0.0))[0] > now:
                continue
            self._start_job(t.name)

    async def _refresh_links(self) -> None:
        try:
            self._links = {ln.target: ln for ln in await self.host.links()} \
                if self.host.signed_in else {}
        except InterappError:
            self._links = {}

    # --- state ------------------------------------------------------------------------------

    def _row(self, t: TargetInfo) -> dict[str, Any]:
        link = self._links.get(t.name)
        prompt = self.prompter.for_target(t.name)
        state = str(t.state)
        if link is not None and link.state in REFUSED and t.state != TargetState.CONNECTED:
            state = str(TargetState.NEEDS_REAUTH)
        return {"name": t.name, "plugin": t.plugin, "server": t.server,
                "client_id": t.client_id, "tls": t.tls, "options": dict(t.options),
                "account_system": t.account_system, "state": state,
                "link_state": str(link.state) if link else None,
                "remote_account": link.remote_account if link else None,
                "account": t.account, "branch": str(t.branch) if t.branch else None,
                "problem": t.problem, "problem_code": t.problem_code,
                "prompt": prompt.id if prompt else None}

    def targets(self) -> list[dict[str, Any]]:
        """Every configured target with its link state and connection state."""
        return [self._row(t) for t in self.host.targets()]

    def state(self) -> dict[str, Any]:
        """The agent, the local application and who is signed in, the targets, the prompts."""
        local = self.host.local
        state, text = self.presence or ("online", "")
        return {
            "agent": {"version": __version__, "pid": os.getpid(),
                      "started_at": self.started_at.isoformat(),
                      "last_seq": self.log.last_seq},
            "local": None if local is None else {
                "server": local.server, "issuer": local.issuer, "client_id": local.client_id,
                "username": local.username},
            "user": self.host.signed_in,
            "presence": {"state": state, "status_text": text, "held": self.presence is not None},
            "activity": self.activity[0].to_json() if self.activity and self.activity[0]
            else None,
            "targets": self.targets(),
            "prompts": self.prompter.describe()}

    # --- the local application --------------------------------------------------------------

    async def set_local(self, url: str, client_id: str, client_secret: str | None
                        ) -> dict[str, Any]:
        """Choose the local application (signs the user out)."""
        info = await self.host.set_local(url, client_id=client_id,
                                         client_secret=Secret(client_secret)
                                         if client_secret else None)
        await self._refresh_links()
        return info.to_dict()

    async def sign_in(self, username: str, password: str) -> dict[str, Any]:
        """Sign in to the local application."""
        me = await self.host.sign_in(username, Secret(password))
        await self._refresh_links()
        self._retry.clear()
        self._spawn(self._quietly(self.keep_once()))
        return me.to_dict()

    async def sign_out(self) -> None:
        """Forget the local session; every target is disconnected."""
        await self.host.sign_out()
        self._links = {}

    # --- targets ----------------------------------------------------------------------------

    async def add_target(self, name: str, *, plugin: str, server: str, client_id: str | None,
                         client_secret: str | None, account_system: str, tls: bool | None,
                         options: dict[str, str]) -> dict[str, Any]:
        """Add or replace a target."""
        info = await self.host.add_target(
            name, plugin=plugin, server=server, client_id=client_id,
            client_secret=Secret(client_secret) if client_secret else None,
            account_system=account_system, tls=tls, options=options)
        self._retry.pop(name, None)
        return self._row(info)

    async def remove_target(self, name: str) -> None:
        """Remove a target (its link stays until unlinked)."""
        await self._cancel(name)
        await self.host.remove_target(name)

    async def _cancel(self, name: str) -> None:
        prompt = self.prompter.for_target(name)
        if prompt is not None and not prompt.future.done():
            prompt.future.set_result(None)
        job = self._jobs.pop(name, None)
        if job is not None:
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)

    async def connect(self, name: str, *, account: str | None = None, reconnect: bool = False,
                      wait: float = CONNECT_WAIT, via: str | None = None,
                      can: list[str] | None = None, headless: bool = False
                      ) -> dict[str, Any]:
        """Connect ``name``: ``{"connected": …}``, or ``{"prompt": …}`` to answer first."""
        info = self.host.target(name)
        if self.host.signed_in is None:
            raise NotSignedIn("nobody is signed in to the local application")
        open_prompt = self.prompter.for_target(name)
        if open_prompt is not None:
            return {"prompt": open_prompt.describe()}
        if info.state == TargetState.CONNECTED and not reconnect and \
                account in (None, info.account) and name not in self._jobs:
            return {"connected": _connected(await self.host.connect(name, NoInput()))}
        future = self._waiter(name)
        if name not in self._jobs:
            self._start_job(name, account=account, reconnect=reconnect, via=via, can=can,
                            headless=headless)
        return await self._outcome(name, future, wait)

    async def answer(self, prompt_id: str, answers: dict[str, Any] | None,
                     wait: float = CONNECT_WAIT) -> dict[str, Any]:
        """Answer (or decline, ``answers`` None) a prompt; then what came of it."""
        prompt = self.prompter.pending.get(prompt_id)
        target = prompt.target if prompt is not None else ""
        if prompt is not None and isinstance(prompt.request, ShowCodeRequest):
            wait = max(wait, prompt.request.expires_in + 10)  # the person types the code
        future = self._waiter(target)
        try:
            self.prompter.answer(prompt_id, answers)
        except InterappError:
            self._waiters.get(target, []).remove(future)
            raise
        if answers is None:
            self._waiters.get(target, []).remove(future)
            return {"declined": {"id": prompt_id, "target": target}}
        return await self._outcome(target, future, wait)

    async def links(self) -> list[dict[str, Any]]:
        """The signed-in user's stored links."""
        await self._refresh_links()
        return [ln.to_dict() for ln in await self.host.links()]

    async def audit(self) -> dict[str, Any]:
        """Check the vault's hash-chained audit log."""
        report = await self.host.verify_audit()
        return {"ok": report.ok, "entries": report.entries,
                "first_bad_seq": report.first_bad_seq, "reason": report.reason}

    async def unlink(self, name: str) -> dict[str, Any]:
        """Revoke at the target, then destroy the local credential."""
        await self._cancel(name)
        try:
            done = await self.host.unlink(name)
        finally:
            await self._refresh_links()
        return done.to_dict()

    # --- buddies, messages, presence ----------------------------------------------------------

    async def _ready(self, name: str) -> None:
        """Connect ``name`` without asking if it is not connected (calls never prompt)."""
        info = self.host.target(name)
        if info.state != TargetState.CONNECTED:
            try:
                await self.host.connect(name, NoInput())
            except PromptUnavailable as exc:
                exc.message = f"{name} is not connected and needs a sign-in: connect it first"
                raise

    async def buddies(self, target: str | None) -> dict[str, Any]:
        """The buddy list of one target, or across the connected ones."""
        if target:
            await self._ready(target)
        found = await self.host.buddies(target)
        return {"buddies": [{**b.to_dict(), "activity_text": render_activity(b.activity)}
                            for b in found],
                "problems": {n: {"error": e.code, "message": e.message}
                             for n, e in found.problems.items()}}

    async def buddy(self, action: str, target: str, user: str) -> dict[str, Any]:
        """Ask, accept or remove a buddy."""
        await self._ready(target)
        call = {"add": self.host.add_buddy, "accept": self.host.accept_buddy,
                "remove": self.host.remove_buddy}[action]
        await call(target, user)
        return {"target": target, "user": user, "action": action, "ok": True}

    async def send(self, target: str, to: str, body: str,
                   client_msg_id: str | None) -> dict[str, Any]:
        """Send once per ``client_msg_id``."""
        await self._ready(target)
        msg = await self.host.send(target, to, body, client_msg_id=client_msg_id)
        return msg.to_dict()

    async def history(self, target: str, user: str, limit: int,
                      before: str | None) -> dict[str, Any]:
        """The conversation with ``user``, newest last."""
        await self._ready(target)
        found = await self.host.history(target, user, limit=limit, before=before)
        return {"target": target, "with": user, "messages": [m.to_dict() for m in found]}

    async def set_presence(self, state: str, status_text: str) -> dict[str, Any]:
        """Set presence on every connected target and hold it: a target that connects (or
        reconnects) later gets it too, also after the agent restarts."""
        if state not in PRESENCE_STATES:
            raise ConfigError(f"state must be one of {', '.join(PRESENCE_STATES)}")
        result = await self.host.set_presence(state, status_text)
        self.presence = (state, status_text)
        await self.log.set_meta("presence", json.dumps({"state": state,
                                                        "status_text": status_text}))
        return result.to_dict()

