"""Fan-out of the host's events to every subscriber, and when a stream's cursor may be saved.

Theory of operation: each :meth:`Host.events` iterator is a :class:`Subscription` with a
bounded queue. :meth:`Hub.publish` puts an event in every queue without waiting (a subscriber
that falls ``limit`` events behind loses the oldest and is told with ``EventsDropped``), so a
slow consumer never holds up a stream or the other consumers.

An event from a target's stream carries the cursor to resume after it. The cursor is saved
only once *every* subscriber that received the event has taken it *and asked for the next
one* (or left having taken it): a program that stops after handling N events never has the
N+1st marked seen — an event a subscriber left behind stops the cursor before it for good, so
the next host resumes there (at least once, never lost).
With nobody subscribed, an event counts as handled at once. :class:`Hub` tracks this per
target as an ordered list of (cursor, subscribers still holding it) and calls ``save`` with
the newest cursor whose predecessors are all handled.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from interapp.host import events as ev

LIMIT = 10_000


@dataclass(eq=False)
class _Pending:
    target: str
    cursor: str
    holders: set[Subscription] = field(default_factory=set)
    unhandled: bool = False  # a subscriber left without taking it: never mark it seen


class Subscription:
    """One consumer's queue of events: an async iterator (also an async context manager);
    ``aclose()`` to leave before the host closes."""

    def __init__(self, hub: Hub, limit: int) -> None:
        self._hub = hub
        self._queue: deque[tuple[ev.Event, _Pending | None]] = deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self._dropped = 0
        self._held: _Pending | None = None
        self.closed = False

    def _put(self, event: ev.Event, pending: _Pending | None) -> None:
        if len(self._queue) >= self._limit:
            _, lost = self._queue.popleft()
            self._dropped += 1
            if lost is not None:
                self._hub._release(lost, self)
        self._queue.append((event, pending))
        self._ready.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def pending(self) -> int:
        """How many events wait in this subscription's queue."""
        return len(self._queue)

    def get_nowait(self) -> ev.Event | None:
        """The next event if one is queued, else None (for polling loops)."""
        self._ack()
        if self._dropped:
            count, self._dropped = self._dropped, 0
            return ev.EventsDropped("*", count)
        if not self._queue:
            return None
        event, self._held = self._queue.popleft()
        return event

    async def __anext__(self) -> ev.Event:
        self._ack()
        while not self._queue and not self._dropped:
            if self.closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        if self._dropped:
            count, self._dropped = self._dropped, 0
            return ev.EventsDropped("*", count)
        event, pending = self._queue.popleft()
        self._held = pending
        return event

    def _ack(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._hub._release(held, self)

    async def aclose(self) -> None:
        """Leave: the event last taken counts as handled; the queued ones were not, so the
        saved cursor stays before them (the next host replays them)."""
        if self.closed:
            return
        self.closed = True
        self._ready.set()
        self._ack()
        while self._queue:
            _, pending = self._queue.popleft()
            if pending is not None:
                pending.unhandled = True
                self._hub._release(pending, self)
        self._hub._leave(self)


class Hub:
    """Publishes events to the subscribers; decides when stream cursors are handled."""

    def __init__(self, save: Callable[[str, str], None], *, limit: int = LIMIT) -> None:
        self._save = save
        self._limit = limit
        self._subscribers: set[Subscription] = set()
        self._pending: dict[str, deque[_Pending]] = {}
        self.changed = asyncio.Event()
        #: Called with every event before the subscribers get it (e.g. the host noting when
        #: a buddy was last active); must not block or raise.
        self.observers: list[Callable[[ev.Event], None]] = []

    @property
    def subscribers(self) -> int:
        """How many consumers are listening."""
        return len(self._subscribers)

    def subscribe(self) -> Subscription:
        """A new consumer."""
        sub = Subscription(self, self._limit)
        self._subscribers.add(sub)
        self.changed.set()
        return sub

    def publish(self, event: ev.Event, cursor: str | None = None) -> None:
        """Give ``event`` to every subscriber; ``cursor`` is saved once all have handled it."""
        for observe in self.observers:
            observe(event)
        pending = None
        if cursor is not None:
            pending = _Pending(event.target, cursor, set(self._subscribers))
            self._pending.setdefault(event.target, deque()).append(pending)
        for sub in list(self._subscribers):
            sub._put(event, pending)
        if pending is not None:
            self._settle(event.target)

    def publish_cursor(self, target: str, cursor: str) -> None:
        """A stream event that makes no event (e.g. repeated presence): its cursor is handled
        once everything published before it is."""
        self._pending.setdefault(target, deque()).append(_Pending(target, cursor))
        self._settle(target)

    def _release(self, pending: _Pending, sub: Subscription) -> None:
        pending.holders.discard(sub)
        self._settle(pending.target)

    def _settle(self, target: str) -> None:
        queue = self._pending.get(target)
        newest = None
        while queue and not queue[0].holders and not queue[0].unhandled:
            newest = queue.popleft().cursor
        if newest is not None:
            self._save(target, newest)

    def _leave(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        self.changed.set()

    async def close(self) -> None:
        """End every subscription (their iterators stop)."""
        for sub in list(self._subscribers):
            await sub.aclose()
