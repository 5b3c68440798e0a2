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
* **Revocations close streams.** :meth:`EventHub.recheck` marks an account's subscriptions so
  that each stream looks its credential up again (see ``revocations``); the same channel
  carries, besides events, a poke telling the other processes to look for new revocations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.server.observability import EVENTS_DELIVERED
from interapp.server.storage.fastsql import Statement, run, run_many
from interapp.server.storage.schema import events, users

if TYPE_CHECKING:  # redis is imported only by servers started with --redis (about 6 MB)
    from redis.asyncio import Redis

log = logging.getLogger("interapp.server.events")

Event = dict[str, Any]


_KEEPALIVE = {getattr(socket, name): value for name, value in (
    ("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)) if hasattr(socket, name)}
PUBLISH_PAUSE_SECONDS = 2.0  # after a failed publish, skip Redis this long
_CHUNK = 500  # ids per statement: well under SQLite's and PostgreSQL's parameter limits
_IDS: sa.BindParameter[list[str]] = sa.bindparam("ids", expanding=True)
# FOR NO KEY UPDATE, as an UPDATE of a non-key column takes: FOR UPDATE would conflict with the
# KEY SHARE locks that foreign-key checks (inserting contacts) hold, and deadlock two requests
_LOCK = (sa.select(users.c.id).where(users.c.id.in_(_IDS)).order_by(users.c.id)
         .with_for_update(key_share=True))
_BUMP = (sa.update(users).where(users.c.id.in_(_IDS)).values(last_seq=users.c.last_seq + 1)
         .returning(users.c.id, users.c.last_seq))
_INSERT = Statement(events.insert().values({c.name: sa.bindparam(c.name) for c in events.c}))
# SQLite, a small audience (a batch of messages): one compiled UPDATE per account, on the loop's
# connection (storage.fastsql) — cheaper than one IN-list statement built for each batch
_BUMP_ONE = Statement(sa.update(users).where(users.c.id == sa.bindparam("uid"))
                      .values(last_seq=users.c.last_seq + sa.bindparam("n"))
                      .returning(users.c.id, users.c.last_seq))
_BUMP_ONE_MAX = 64
_SINCE = (sa.select(events.c.seq, events.c.type, events.c.payload)
          .where(events.c.user_id == sa.bindparam("user"), events.c.seq > sa.bindparam("since"))
          .order_by(events.c.seq).limit(sa.bindparam("limit")))


async def append_events(conn: AsyncConnection, items: Iterable[tuple[str, str, dict[str, Any]]]
                        ) -> list[tuple[str, Event]]:
    """Append ``(user_id, type, payload)`` events; return ``(user_id, event)`` with their seqs.

    A constant number of statements whatever the audience (a presence change reaches every
    buddy): the accounts' ``last_seq`` are bumped by one ``UPDATE … RETURNING`` per chunk of
    ids (on PostgreSQL after locking the rows in id order, so concurrent writers never
    deadlock), then the events go in with one multi-row ``INSERT``. The result keeps the order
    of ``items`` (the hub delivers in that order: a message's recipient can come first).
    """
    pending = list(items)
    if not pending:
        return []
    counts: dict[str, int] = defaultdict(int)
    for user_id, _, _ in pending:
        counts[user_id] += 1
    ids = sorted(counts)
    last: dict[str, int] = {}
    one_by_one = conn.dialect.name == "sqlite" and len(ids) <= _BUMP_ONE_MAX
    for uid in ids if one_by_one else ():
        bumped, _ = await run(conn, _BUMP_ONE, {"uid": uid, "n": counts[uid]})
        last.update({row[0]: int(row[1]) for row in bumped})
    for start in range(0, len(ids) if not one_by_one else 0, _CHUNK):
        chunk = ids[start:start + _CHUNK]
        if conn.dialect.name == "postgresql":
            await conn.execute(_LOCK, {"ids": chunk})
        if all(counts[i] == 1 for i in chunk):
            rows = await conn.execute(_BUMP, {"ids": chunk})
        else:  # the same account more than once (rare): bump by its count
            rows = await conn.execute(
                sa.update(users).where(users.c.id.in_(chunk))
                .values(last_seq=users.c.last_seq + sa.case({i: counts[i] for i in chunk},
                                                             value=users.c.id, else_=1))
                .returning(users.c.id, users.c.last_seq))
        last.update({row.id: int(row.last_seq) for row in rows})
    now = time.time()
    out: list[tuple[str, Event]] = []
    rows_in: list[dict[str, Any]] = []
    encoded: dict[int, str] = {}  # one payload often goes to several accounts: encode it once
    for user_id, etype, payload in pending:
        if user_id not in last:  # the account was deleted meanwhile: nobody to tell
            continue
        seq = last[user_id] - counts[user_id] + 1
        counts[user_id] -= 1
        text = encoded.get(id(payload))
        if text is None:
            text = encoded[id(payload)] = json.dumps(payload)
        rows_in.append({"user_id": user_id, "seq": seq, "type": etype, "payload": text,
                        "created_at": now})
        out.append((user_id, {"seq": seq, "type": etype, **payload}))
    await run_many(conn, _INSERT, rows_in)
    return out


async def events_since(conn: AsyncConnection, user_id: str, since: int,
                       limit: int = 500) -> list[Event]:
    """Stored events of ``user_id`` with ``seq > since``, oldest first."""
    rows = await conn.execute(_SINCE, {"user": user_id, "since": since, "limit": limit})
    return [{"seq": seq, "type": etype, **json.loads(payload)} for seq, etype, payload in rows]


@dataclass(eq=False, slots=True)
class Subscription:
    """One connected stream's bounded queue of live events.

    Kept small on purpose (one per connected stream, 10,000 per process): a list, two flags and,
    only while the stream waits, one future — no task, no :class:`asyncio.Event` (whose empty
    deque alone is half a kilobyte).
    """

    user_id: str
    limit: int
    pending: list[Event] = field(default_factory=list)
    overflowed: bool = False
    stale: bool = False  # woken: the stream must reconcile with the table
    recheck: bool = False  # a revocation for this account: the stream checks its credential
    waiter: asyncio.Future[None] | None = None

    def offer(self, event: Event) -> None:
        """Queue an event, or mark the subscription overflowed when the queue is full."""
        if self.overflowed:
            return
        if len(self.pending) >= self.limit:
            self.overflowed = True
            self.pending = []  # the stream is cut and resumes from the table
        else:
            self.pending.append(event)
        self._notify()

    def wake(self) -> None:
        """Ask the stream to reconcile with the table (events may have been missed)."""
        self.stale = True
        self._notify()

    def revoked(self) -> None:
        """Ask the stream to check its credential again (tokens of the account were revoked)."""
        self.recheck = True
        self._notify()

    def take(self) -> list[Event]:
        """The queued events, oldest first; the queue starts again empty."""
        batch, self.pending = self.pending, []
        return batch

    async def wait(self) -> None:
        """Return once there is something to do (events, an overflow or a wake-up)."""
        if self.pending or self.overflowed or self.stale or self.recheck:
            return
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def _notify(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class EventHub:
    """Delivers committed events to this process's streams, and across processes via Redis.

    Redis may go away and come back: publishing then fails fast and is only logged (the events
    are already in the table), and the listener retries with a growing pause (0.5 s to 5 s). Each
    time it fails, and once it has subscribed again, every stream of this process is woken to
    reconcile with the table, so events written through other processes meanwhile still arrive
    (within that pause while Redis is down, at once when it is back).
    """

    def __init__(self, *, app: str, queue_size: int = 1000, redis_url: str | None = None) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._queue_size = queue_size
        self._channel = f"interapp:{app}:events"
        self._origin = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._redis_url = redis_url
        self._redis: Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._publish_failing = False
        self._publish_paused_until = 0.0
        self.delivered = 0
        self.revocation_epoch = 0  # bumped by every recheck(): a stream compares it
        self.on_revocation: Callable[[], None] | None = None  # a poke from another process

    @property
    def redis(self) -> Redis | None:
        """The Redis client, when fan-out across processes is on."""
        return self._redis

    async def start(self) -> None:
        """Connect to Redis (when configured) and start listening for other processes.

        A Redis that does not answer yet does not stop the start (``interapp serve`` checks it
        once up front): the listener keeps trying, and login limits answer 503 meanwhile.
        """
        if not self._redis_url:
            return
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff

        # commands fail within seconds, never hang: one quick retry covers a dropped connection
        self._redis = Redis.from_url(self._redis_url, socket_connect_timeout=2, socket_timeout=2,
                                     retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1))
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
        sub = Subscription(user_id, self._queue_size)
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
    def has_streams(self) -> bool:
        """Whether any stream is connected to this process (cheaper than counting them)."""
        return bool(self._subs)

    @property
    def active_streams(self) -> int:
        """Number of connected streams in this process."""
        return sum(len(s) for s in self._subs.values())

    async def publish(self, items: list[tuple[str, Event]]) -> None:
        """Deliver committed events locally and (with Redis) to the other processes."""
        if not items:
            return
        self._deliver(items)
        if self._redis is not None and time.monotonic() >= self._publish_paused_until:
            data = json.dumps({"o": self._origin, "items": items})
            try:
                await self._redis.publish(self._channel, data)
            except Exception as exc:  # streams elsewhere will catch up from the table
                if not self._publish_failing:
                    log.warning("redis publish failed (%s); other processes' streams catch up "
                                "from the table", type(exc).__name__)
                self._publish_failing = True
                # a Redis that is down costs each attempt seconds: do not make every request
                # after a commit wait for it; the listeners of the other processes reconcile
                self._publish_paused_until = time.monotonic() + PUBLISH_PAUSE_SECONDS
            else:
                if self._publish_failing:
                    log.warning("redis publish works again")
                self._publish_failing = False

    def recheck(self, user_ids: Iterable[str]) -> None:
        """Make every stream of these accounts in this process check its credential again."""
        self.revocation_epoch += 1
        for user_id in user_ids:
            for sub in self._subs.get(user_id, ()):
                sub.revoked()

    async def announce_revocation(self) -> None:
        """Tell the other processes (with Redis) to look for new revocations now."""
        if self._redis is None or time.monotonic() < self._publish_paused_until:
            return  # (Redis failing: they find it on their next poll anyway)
        try:
            await self._redis.publish(self._channel, json.dumps({"o": self._origin,
                                                                 "revoked": True}))
        except Exception as exc:
            log.warning("redis publish of a revocation failed (%s); other processes notice "
                        "it within a second", type(exc).__name__)
            self._publish_paused_until = time.monotonic() + PUBLISH_PAUSE_SECONDS

    def _deliver(self, items: list[tuple[str, Event]]) -> None:
        for user_id, event in items:
            for sub in self._subs.get(user_id, ()):
                sub.offer(event)
                self.delivered += 1
                EVENTS_DELIVERED.inc()

    def _wake_all(self) -> None:
        """Make every stream of this process reconcile with the table."""
        for subs in self._subs.values():
            for sub in subs:
                sub.wake()

    async def _listen(self, ready: asyncio.Event) -> None:
        assert self._redis_url is not None
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # no retries inside redis-py: every drop must surface here, because a silent
        # resubscription would miss what was published meanwhile
        # TCP keepalive: a listener waits for messages without a timeout, so a half-open
        # connection (Redis's host gone silently) is only noticed by the kernel (~25 s)
        client = Redis.from_url(self._redis_url, socket_connect_timeout=2, socket_timeout=None,
                                retry=Retry(NoBackoff(), 0), socket_keepalive=True,
                                socket_keepalive_options=_KEEPALIVE)
        pause, lost = 0.5, False
        try:
            while True:
                try:
                    async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                        await pubsub.subscribe(self._channel)
                        ready.set()
                        if lost:
                            log.warning("redis listener subscribed again")
                            self._wake_all()  # catch up with what was published meanwhile
                        pause, lost = 0.5, False
                        async for message in pubsub.listen():
                            data = json.loads(message["data"])
                            if data.get("o") == self._origin:
                                continue
                            if "revoked" in data:
                                if self.on_revocation is not None:
                                    self.on_revocation()
                            else:
                                self._deliver([(u, e) for u, e in data["items"]])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not lost:
                        log.warning("redis listener lost (%s); retrying", type(exc).__name__)
                    lost = True
                    ready.set()
                    self._wake_all()  # while Redis is away, streams poll the table at this pace
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 5.0)
        finally:
            await client.aclose()
