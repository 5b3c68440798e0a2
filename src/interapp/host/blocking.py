"""The host for programs whose main loop is not asyncio: a game loop, a GUI toolkit's loop.

Theory of operation: :class:`BlockingHost` runs a :class:`~interapp.host.Host` on an event
loop in a background thread. Every method sends its call to that loop and waits for the
answer (``timeout`` seconds at most), so it can be called from any thread; the calls
themselves never block that loop. Live events are collected on the loop as they come and
handed out by :meth:`BlockingHost.poll`, which a game calls once a frame: it returns the
events pending since the last poll, at once, and runs the callbacks registered with
:meth:`BlockingHost.on` on the caller's thread.

A prompt (claim 1: the opposite application asks for its account details) is answered by
``prompter``: a :class:`~interapp.host.Prompter`, or a plain function taking the
:class:`~interapp.host.PromptRequest` and returning the answers (or None to decline), which
runs on a worker thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

from interapp.host import events as ev
from interapp.host.facade import Host
from interapp.host.model import (
    ActivityResult,
    Buddies,
    ConnectResult,
    Invite,
    Invites,
    LinkInfo,
    LocalInfo,
    LocalUser,
    Message,
    PresenceResult,
    TargetInfo,
    UnlinkResult,
)
from interapp.host.prompts import Answers, Prompter, PromptRequest
from interapp.presence import Activity, PresenceState
from interapp.secret import Secret

__all__ = ["BlockingHost", "PromptFunction"]

T = TypeVar("T")
E = TypeVar("E", bound=ev.Event)
PromptFunction = Callable[[PromptRequest], Answers | None]
TIMEOUT = 660.0  # a connect may wait minutes for a person to answer its prompt


class _FunctionPrompter:
    """A plain function as a :class:`Prompter` (run on a worker thread)."""

    interactive = True

    def __init__(self, fn: PromptFunction) -> None:
        self._fn = fn

    async def ask(self, request: PromptRequest) -> Answers | None:
        """Call the function on a worker thread."""
        return await asyncio.to_thread(self._fn, request)


def _prompter(value: Prompter | PromptFunction | None) -> Prompter | None:
    if value is None or hasattr(value, "ask"):
        return cast("Prompter | None", value)
    return _FunctionPrompter(value)


class BlockingHost:
    """The :class:`~interapp.host.Host` API as plain blocking calls (see the module docstring).

    Make one with :meth:`open`; :meth:`close` it (or use ``with``).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
                 host: Host, timeout: float) -> None:
        """Use :meth:`open`."""
        self._loop = loop
        self._thread = thread
        self.host = host
        """The asyncio host (use it only from coroutines run on :meth:`run`)."""
        self.timeout = timeout
        self._inbox: queue.SimpleQueue[ev.Event] = queue.SimpleQueue()
        self._callbacks: list[tuple[type[ev.Event], Callable[[Any], Any]]] = []
        self._pump = self._submit(self._collect())

    @classmethod
    def open(cls, home: Path | str | None = None, *, memory: bool = False,
             vault_key: Secret | str | None = None, vault_url: str | None = None,
             prompter: Prompter | PromptFunction | None = None,
             env: Mapping[str, str] | None = None, call_timeout: float = 30.0,
             timeout: float = TIMEOUT) -> BlockingHost:
        """Start the background loop and open the host on it (arguments as
        :meth:`Host.open`)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="interapp-host", daemon=True)
        thread.start()
        opening = Host.open(home, memory=memory, vault_key=vault_key, vault_url=vault_url,
                            prompter=_prompter(prompter), env=env, call_timeout=call_timeout)

        async def make() -> Host:
            return await opening

        try:
            host = asyncio.run_coroutine_threadsafe(make(), loop).result(timeout)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
            raise
        return cls(loop, thread, host, timeout)

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the host's loop and wait for its result."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("BlockingHost calls cannot be made from the host's own loop")
        return self._submit(coro).result(self.timeout)

    async def _collect(self) -> None:
        async with self.host.events() as sub:
            async for event in sub:
                self._inbox.put(event)

    def close(self) -> None:
        """Close the host (streams stop, cursors are saved) and stop the loop thread."""
        if self._loop.is_closed():
            return
        self._pump.cancel()
        with contextlib.suppress(Exception):
            self.run(self.host.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> BlockingHost:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- events ---------------------------------------------------------------------------

    def poll(self, max_events: int | None = None) -> list[ev.Event]:
        """The events that arrived since the last poll (never waits); runs the callbacks
        registered with :meth:`on` for each, on this thread."""
        out: list[ev.Event] = []
        while max_events is None or len(out) < max_events:
            try:
                out.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for event in out:
            for kind, callback in list(self._callbacks):
                if isinstance(event, kind):
                    callback(event)
        return out

    def wait(self, timeout: float) -> list[ev.Event]:
        """Like :meth:`poll`, but waits up to ``timeout`` seconds for the first event."""
        try:
            first = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return []
        self._inbox.put(first)  # keep the order: poll takes it first
        return self.poll()

    def on(self, kind: type[E], callback: Callable[[E], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` from :meth:`poll` for every event of class ``kind``."""
        entry = (kind, callback)
        self._callbacks.append(entry)

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(entry)

        return off

    # --- the Host API, blocking ------------------------------------------------------------

    @property
    def signed_in(self) -> str | None:
        """The local account signed in, or None."""
        return self.host.signed_in

    @property
    def local(self) -> LocalInfo | None:
        """The local application, or None."""
        return self.host.local

    def set_local(self, url: str, *, client_id: str,
                  client_secret: Secret | str | None = None) -> LocalInfo:
        """See :meth:`Host.set_local`."""
        return self.run(self.host.set_local(url, client_id=client_id,
                                            client_secret=client_secret))

    def sign_in(self, username: str, password: Secret | str) -> LocalUser:
        """See :meth:`Host.sign_in`."""
        return self.run(self.host.sign_in(username, password))

    def sign_out(self) -> None:
        """See :meth:`Host.sign_out`."""
        self.run(self.host.sign_out())

    def targets(self) -> list[TargetInfo]:
        """See :meth:`Host.targets`."""
        return self.host.targets()

    def add_target(self, name: str, *, plugin: str, server: str, client_id: str | None = None,
                   client_secret: Secret | str | None = None, account_system: str = "separate",
                   tls: bool | None = None,
                   options: Mapping[str, str] | None = None) -> TargetInfo:
        """See :meth:`Host.add_target`."""
        return self.run(self.host.add_target(
            name, plugin=plugin, server=server, client_id=client_id,
            client_secret=client_secret, account_system=account_system, tls=tls,
            options=options))

    def remove_target(self, name: str) -> None:
        """See :meth:`Host.remove_target`."""
        self.run(self.host.remove_target(name))

    def connect(self, name: str, prompter: Prompter | PromptFunction | None = None, *,
                account: str | None = None) -> ConnectResult:
        """See :meth:`Host.connect`."""
        return self.run(self.host.connect(name, _prompter(prompter), account=account))

    def buddies(self, target: str | None = None) -> Buddies:
        """See :meth:`Host.buddies`."""
        return self.run(self.host.buddies(target))

    def send(self, target: str, to: str, body: str, *,
             client_msg_id: str | None = None) -> Message:
        """See :meth:`Host.send`."""
        return self.run(self.host.send(target, to, body, client_msg_id=client_msg_id))

    def history(self, target: str, user: str, *, limit: int = 50,
                before: str | None = None) -> list[Message]:
        """See :meth:`Host.history`."""
        return self.run(self.host.history(target, user, limit=limit, before=before))

    def set_presence(self, state: PresenceState | str, status_text: str = "", *,
                     targets: list[str] | None = None) -> PresenceResult:
        """See :meth:`Host.set_presence`."""
        return self.run(self.host.set_presence(state, status_text, targets=targets))

    def set_activity(self, activity: Activity | None, *,
                     targets: list[str] | None = None) -> ActivityResult:
        """See :meth:`Host.set_activity`."""
        return self.run(self.host.set_activity(activity, targets=targets))

    def invite(self, target: str, user: str, *, activity: Activity | None = None,
               join_url: str | None = None, message: str = "",
               client_invite_id: str | None = None) -> Invite:
        """See :meth:`Host.invite`."""
        return self.run(self.host.invite(target, user, activity=activity, join_url=join_url,
                                         message=message, client_invite_id=client_invite_id))

    def invites(self, target: str | None = None) -> Invites:
        """See :meth:`Host.invites`."""
        return self.run(self.host.invites(target))

    def answer_invite(self, target: str, invite_id: str, accept: bool) -> Invite:
        """See :meth:`Host.answer_invite`."""
        return self.run(self.host.answer_invite(target, invite_id, accept))

    def add_buddy(self, target: str, user: str) -> None:
        """See :meth:`Host.add_buddy`."""
        self.run(self.host.add_buddy(target, user))

    def accept_buddy(self, target: str, user: str) -> None:
        """See :meth:`Host.accept_buddy`."""
        self.run(self.host.accept_buddy(target, user))

    def remove_buddy(self, target: str, user: str) -> None:
        """See :meth:`Host.remove_buddy`."""
        self.run(self.host.remove_buddy(target, user))

    def links(self) -> list[LinkInfo]:
        """See :meth:`Host.links`."""
        return self.run(self.host.links())

    def unlink(self, name: str) -> UnlinkResult:
        """See :meth:`Host.unlink`."""
        return self.run(self.host.unlink(name))
