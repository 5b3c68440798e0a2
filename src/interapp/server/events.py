"""Per-account event log and live fan-out to connected streams.

Theory of operation:

* **Durable first.** An event is appended to the ``events`` table in the same transaction as the
  change it reports; its ``seq`` comes from bumping the account's ``last_seq``. Rows are locked in
  sorted account-id order so concurrent transactions never deadlock on PostgreSQL.
* **Then live.** After the commit the events are handed to the :class:`EventHub`, which puts them
  on the bounded queues of this process's subscribers and, with Redis, publishes them once on a
  channel that every other process listens to (each process skips its own messages).
* **Readers reconcile.** A stream subscribes *before* replaying ``events`` after its ``since``,
  then drops live duplicates (``seq`` already sent) and fills any gap from the table, so the
  client sees every ``seq`` exactly once and in order, whichever process served the writer.
* **Slow readers are cut, not buffered.** A full queue marks the subscription overflowed; the
  stream is closed and the client resumes from its last ``seq``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.server.observability import EVENTS_DELIVERED
from interapp.server.storage.schema import events, users

log = logging.getLogger("interapp.server.events")

Event = dict[str, Any]


async def append_events(conn: AsyncConnection, items: Iterable[tuple[str, str, dict[str, Any]]]
                        ) -> list[tuple[str, Event]]:
    """Append ``(user_id, type, payload)`` events; return ``(user_id, event)`` with their seqs."""
    pending = sorted(items, key=lambda item: item[0])
    out: list[tuple[str, Event]] = []
    now = time.time()
    for user_id, etype, payload in pending:
        seq = (await conn.execute(
            sa.update(users).where(users.c.id == user_id)
            .values(last_seq=users.c.last_seq + 1).returning(users.c.last_seq))).scalar_one()
        await conn.execute(events.insert().values(
            user_id=user_id, seq=seq, type=etype, payload=json.dumps(payload), created_at=now))
        out.append((user_id, {"seq": seq, "type": etype, **payload}))
    return out


async def events_since(conn: AsyncConnection, user_id: str, since: int,
                       limit: int = 500) -> list[Event]:
    """Stored events of ``user_id`` with ``seq > since``, oldest first."""
    rows = await conn.execute(
        sa.select(events.c.seq, events.c.type, events.c.payload)
        .where(events.c.user_id == user_id, events.c.seq > since)
        .order_by(events.c.seq).limit(limit))
    return [{"seq": seq, "type": etype, **json.loads(payload)} for seq, etype, payload in rows]


@dataclass(eq=False)
class Subscription:
    """One connected stream's bounded queue."""

    user_id: str
    queue: asyncio.Queue[Event]
    overflowed: bool = False
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, event: Event) -> None:
        """Queue an event, or mark the subscription overflowed when the queue is full."""
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            self.wakeup.set()


class EventHub:
    """Delivers committed events to this process's streams, and across processes via Redis."""

    def __init__(self, *, app: str, queue_size: int = 1000, redis_url: str | None = None) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._queue_size = queue_size
        self._channel = f"interapp:{app}:events"
        self._origin = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._redis_url = redis_url
        self._redis: Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self.delivered = 0

    @property
    def redis(self) -> Redis | None:
        """The Redis client, when fan-out across processes is on."""
        return self._redis

    async def start(self) -> None:
        """Connect to Redis (when configured) and start listening for other processes."""
        if not self._redis_url:
            return
        self._redis = Redis.from_url(self._redis_url)
        await self._redis.ping()
        ready = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(ready))
        await asyncio.wait_for(ready.wait(), 5)

    async def stop(self) -> None:
        """Stop listening and close Redis."""
        if self._listener:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._redis:
            await self._redis.aclose()

    def subscribe(self, user_id: str) -> Subscription:
        """Register a stream for ``user_id``."""
        sub = Subscription(user_id, asyncio.Queue(self._queue_size))
        self._subs[user_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a stream."""
        subs = self._subs.get(sub.user_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.user_id]

    @property
    def active_streams(self) -> int:
        """Number of connected streams in this process."""
        return sum(len(s) for s in self._subs.values())

    async def publish(self, items: list[tuple[str, Event]]) -> None:
        """Deliver committed events locally and (with Redis) to the other processes."""
        if not items:
            return
        self._deliver(items)
        if self._redis is not None:
            data = json.dumps({"o": self._origin, "items": items})
            try:
                await self._redis.publish(self._channel, data)
            except Exception as exc:  # streams elsewhere will catch up from the table
                log.warning("redis publish failed: %s", type(exc).__name__)

    def _deliver(self, items: list[tuple[str, Event]]) -> None:
        for user_id, event in items:
            for sub in self._subs.get(user_id, ()):
                sub.offer(event)
                self.delivered += 1
                EVENTS_DELIVERED.inc()

    async def _listen(self, ready: asyncio.Event) -> None:
        assert self._redis is not None
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    ready.set()
                    async for message in pubsub.listen():
                        data = json.loads(message["data"])
                        if data.get("o") != self._origin:
                            self._deliver([(u, e) for u, e in data["items"]])
                    # A resubscription may have missed messages: wake every stream so it
                    # reconciles with the table.
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("redis listener lost (%s); retrying", type(exc).__name__)
                ready.set()
                for subs in self._subs.values():
                    for sub in subs:
                        sub.wakeup.set()
                await asyncio.sleep(0.5)
