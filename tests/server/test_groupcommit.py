"""Group commit of messages (``interapp.server.groupcommit``), on SQLite and PostgreSQL: sends
that arrive together share a transaction, yet each is answered on its own — a refused send does
not sink its batch, a failed transaction keeps nothing, and a sender that goes away does not
lose its message. The end-to-end test drives a real server over its socket."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from server_kit import Client, RunningServer, Session, events, login, make_buddies, metric, stream
from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.errors import (
    ApiNotFound,
    BadRequest,
    Forbidden,
    Unauthorized,
    UnavailableError,
    ValueRefused,
)
from interapp.server import accounts, social
from interapp.server.accounts import User
from interapp.server.api.errors import to_http
from interapp.server.events import EventHub, events_since
from interapp.server.groupcommit import SendQueue
from interapp.server.storage import Database
from interapp.server.storage.schema import messages


async def _pairs(db: Database, count: int) -> list[tuple[User, User]]:
    tag = uuid.uuid4().hex[:6]
    out = []
    async with db.begin() as conn:
        for i in range(count):
            a = await accounts.create_user(conn, f"a{i}{tag}", password_hash=None)
            b = await accounts.create_user(conn, f"b{i}{tag}", password_hash=None)
            await social.make_buddies(conn, a, b)
            out.append((a, b))
    return out


def _run(db_url: str, work: Callable[[Database, EventHub, SendQueue], Any]) -> Any:
    async def main() -> Any:
        db = Database.open(db_url)
        hub = EventHub(app="groupcommit")
        queue = SendQueue(db, hub)
        try:
            return await work(db, hub, queue)
        finally:
            await queue.close()
            await db.close()

    return asyncio.run(main())


async def _stored(db: Database, sender: User) -> list[str]:
    async with db.begin() as conn:
        rows = await conn.execute(sa.select(messages.c.body).where(
            messages.c.sender_id == sender.id).order_by(messages.c.id))
        return [r[0] for r in rows]


def test_sends_that_arrive_together_share_a_transaction(db_url: str) -> None:
    async def work(db: Database, hub: EventHub, queue: SendQueue) -> None:
        pairs = await _pairs(db, 10)
        subs = {b.id: hub.subscribe(b.id) for _, b in pairs}
        sends = [queue.submit(a, b.username, f"m{k}", f"c{k}")
                 for a, b in pairs for k in range(3)]
        answers = await asyncio.gather(*sends)
        assert len(answers) == 30 and all(m["message_id"] for m in answers)
        assert queue.batches < 30 and queue.largest > 1, (queue.batches, queue.largest)
        for a, b in pairs:  # each message once, each account's seqs contiguous
            assert await _stored(db, a) == ["m0", "m1", "m2"]
            async with db.begin() as conn:
                logged = await events_since(conn, b.id, 0)
            seqs = [e["seq"] for e in logged]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            assert [e["body"] for e in logged if e["type"] == "message"] == ["m0", "m1", "m2"]
            live = subs[b.id].take()
            assert [e["body"] for e in live] == ["m0", "m1", "m2"]  # published after commit

    _run(db_url, work)


def test_sends_arriving_steadily_wait_briefly_to_share_a_transaction(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after a commit, a new batch waits COMMIT_DELAY for company: two sends a few
    milliseconds apart share one transaction instead of one each; after a quiet spell
    (BUSY_GAP) a lone send does not wait."""
    from interapp.server import groupcommit

    monkeypatch.setattr(groupcommit, "COMMIT_DELAY", 0.2)  # generous: the machine is shared
    monkeypatch.setattr(groupcommit, "BUSY_GAP", 1.0)

    async def work(db: Database, hub: EventHub, queue: SendQueue) -> None:
        (a, b), = await _pairs(db, 1)
        await queue.submit(a, b.username, "first", "k0")  # no commit before it: no wait
        assert queue.batches == 1
        second = asyncio.ensure_future(queue.submit(a, b.username, "second", "k1"))
        await asyncio.sleep(0.02)
        third = asyncio.ensure_future(queue.submit(a, b.username, "third", "k2"))
        await asyncio.gather(second, third)
        assert queue.batches == 2 and queue.largest == 2, (queue.batches, queue.largest)
        monkeypatch.setattr(groupcommit, "BUSY_GAP", 0.0)  # a quiet spell since
        started = asyncio.get_running_loop().time()
        await queue.submit(a, b.username, "alone", "k3")
        assert asyncio.get_running_loop().time() - started < 0.2  # it did not wait
        assert await _stored(db, a) == ["first", "second", "third", "alone"]

    _run(db_url, work)


def test_a_send_queued_just_as_a_batch_ends_is_answered(db_url: str) -> None:
    """A send queued by the loop step right after a batch's last one, before the runner's
    done-callback, once found the runner slot taken and waited forever. The second send here
    arrives after 0, 1, 2, … loop steps, so one of them lands in that gap."""

    async def work(db: Database, hub: EventHub, queue: SendQueue) -> None:
        ((a, b),) = await _pairs(db, 1)

        async def second(steps: int) -> dict[str, Any]:
            for _ in range(steps):
                await asyncio.sleep(0)
            return await queue.submit(a, b.username, f"second-{steps}", f"k2-{steps}")

        for steps in range(40):
            async with asyncio.timeout(5):
                first, late = await asyncio.gather(
                    queue.submit(a, b.username, f"first-{steps}", f"k1-{steps}"), second(steps))
            assert (first["body"], late["body"]) == (f"first-{steps}", f"second-{steps}")
        assert len(await _stored(db, a)) == 80

    _run(db_url, work)


def test_sends_arriving_at_any_moment_are_all_answered(db_url: str) -> None:
    """Senders that each send one message after the other, at staggered moments."""

    async def work(db: Database, hub: EventHub, queue: SendQueue) -> None:
        pairs = await _pairs(db, 8)

        async def sender(k: int, a: User, b: User) -> None:
            for n in range(40):
                await queue.submit(a, b.username, f"{n}", f"{k}-{n}")
                for _ in range((k + n) % 3):
                    await asyncio.sleep(0)

        async with asyncio.timeout(60):
            await asyncio.gather(*(sender(k, a, b) for k, (a, b) in enumerate(pairs)))
        for a, _ in pairs:
            assert await _stored(db, a) == [str(n) for n in range(40)]

    _run(db_url, work)


def test_a_refused_send_does_not_sink_its_batch(db_url: str) -> None:
    async def work(db: Database, hub: EventHub, queue: SendQueue) -> None:
        (a, b), (c, _) = await _pairs(db, 2)

        async def revoked(conn: AsyncConnection) -> User:
            raise Unauthorized("the access token is invalid, expired or revoked")

        results = await asyncio.gather(
            queue.submit(a, b.username, "ok-1", "k1"),
            queue.submit(a, "nobody-" + uuid.uuid4().hex[:6], "lost", "k2"),
            queue.submit(c, b.username, "not buddies", "k3"),
            queue.submit(revoked, b.username, "revoked", "k4"),
            queue.submit(a, b.username, "ok-2", "k5"),
            return_exceptions=True)
        assert queue.batches == 1  # all five in one transaction
        assert isinstance(results[1], ApiNotFound)
        assert isinstance(results[2], Forbidden)
        assert isinstance(results[3], Unauthorized)
        assert [r["body"] for r in (results[0], results[4])] == ["ok-1", "ok-2"]
        assert await _stored(db, a) == ["ok-1", "ok-2"]
        assert await _stored(db, c) == []

    _run(db_url, work)


def test_the_same_client_msg_id_twice_in_one_batch_is_stored_once(db_url: str) -> None:
    async def work(db: Database, hub: EventHub, queue: SendQueue) -> None:
        ((a, b),) = await _pairs(db, 1)
        sub = hub.subscribe(b.id)
        first, again = await asyncio.gather(queue.submit(a, b.username, "hi", "same"),
                                            queue.submit(a, b.username, "hi", "same"))
        assert first == again
        assert await _stored(db, a) == ["hi"]
        assert [e["body"] for e in sub.take()] == ["hi"]

    _run(db_url, work)


def test_a_failed_transaction_keeps_nothing_and_answers_every_send(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from interapp.server import groupcommit

    async def work(db: Database, hub: EventHub, queue: SendQueue) -> None:
        pairs = await _pairs(db, 3)
        real = groupcommit.append_events

        async def database_gone(conn: AsyncConnection, items: Any) -> Any:
            await real(conn, items)  # written, then the connection fails before the commit
            raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))

        monkeypatch.setattr(groupcommit, "append_events", database_gone)
        results = await asyncio.gather(*(queue.submit(a, b.username, "x", "k")
                                         for a, b in pairs), return_exceptions=True)
        assert all(isinstance(r, UnavailableError) for r in results), results
        for a, _ in pairs:
            assert await _stored(db, a) == []
        monkeypatch.setattr(groupcommit, "append_events", real)
        retried = await asyncio.gather(*(queue.submit(a, b.username, "x", "k")
                                         for a, b in pairs))  # the client's retry
        assert [m["body"] for m in retried] == ["x"] * 3
        for a, _ in pairs:
            assert await _stored(db, a) == ["x"]

    _run(db_url, work)


def test_a_sender_that_goes_away_still_has_its_message_stored(db_url: str) -> None:
    async def work(db: Database, hub: EventHub, queue: SendQueue) -> None:
        ((a, b),) = await _pairs(db, 1)
        sub = hub.subscribe(b.id)
        task = asyncio.create_task(queue.submit(a, b.username, "bye", "k"))
        await asyncio.sleep(0)  # queued, and its batch started
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await queue.close()
        assert await _stored(db, a) == ["bye"]
        assert [e["body"] for e in sub.take()] == ["bye"]

    _run(db_url, work)


def test_concurrent_http_and_stream_sends_to_one_user(server: RunningServer, http: httpx.Client,
                                                      client: Client) -> None:
    """24 senders at once (12 over HTTP, 12 on their streams) to one receiver: every message
    arrives once, in the receiver's seq order, and the server stored them in fewer
    transactions than messages."""
    target = login(server, http, client)
    senders: list[Session] = [login(server, http, client) for _ in range(24)]
    for s in senders:
        make_buddies(server.db_url, s.user, target.user)
    before_batches = metric(server.url, "interapp_message_batch_size_count")
    before_sum = metric(server.url, "interapp_message_batch_size_sum")
    barrier = threading.Barrier(len(senders))
    failures: list[str] = []

    def over_http(s: Session, k: int) -> None:
        barrier.wait()
        for n in range(5):
            r = s.post("/v1/messages", json={"to": target.username, "body": f"{k}:{n}",
                                             "client_msg_id": f"h{k}-{n}"})
            if r.status_code != 201:
                failures.append(r.text)

    def on_stream(s: Session, k: int) -> None:
        import json

        with stream(server, s.access) as ws:
            barrier.wait()
            for n in range(5):
                ws.send(json.dumps({"type": "send", "to": target.username, "body": f"{k}:{n}",
                                    "client_msg_id": f"s{k}-{n}"}))
                while True:
                    frame = json.loads(ws.recv(10))
                    if frame.get("type") in ("sent", "send_failed"):
                        break
                if frame["type"] != "sent":
                    failures.append(str(frame))

    # since= the last contact_added: a stream that "starts now" would miss sends that commit
    # before it has subscribed (it did once, on a loaded machine)
    with stream(server, target.access, since=len(senders)) as ws:
        threads = [threading.Thread(target=over_http if k % 2 else on_stream, args=(s, k))
                   for k, s in enumerate(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert failures == []
        got = events(ws, 5 * len(senders))
    assert sorted(e["body"] for e in got) == sorted(f"{k}:{n}" for k in range(24)
                                                     for n in range(5))
    seqs = [e["seq"] for e in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    batches = metric(server.url, "interapp_message_batch_size_count") - before_batches
    stored = metric(server.url, "interapp_message_batch_size_sum") - before_sum
    assert stored == 5 * len(senders)
    assert batches < stored, (batches, stored)  # some transactions carried several messages


def test_overlapping_batches_that_deadlock_on_postgresql_are_run_again(pg_url: str) -> None:
    """Two processes' batches hold the same two retried ``client_msg_id`` in opposite orders:
    each inserts its first, then waits for the other's (the unique index). PostgreSQL aborts
    one of them to break the deadlock; that batch runs again and every send is answered."""

    async def main() -> None:
        db = Database.open(pg_url)
        one, two = SendQueue(db, EventHub(app="gc-a")), SendQueue(db, EventHub(app="gc-b"))
        try:
            (a, x), (b, y) = await _pairs(db, 2)
            both_inserted_once = asyncio.Barrier(2)
            waited: set[str] = set()

            def after_the_first_insert(user: User, key: str) -> Any:
                async def check(conn: AsyncConnection) -> User:
                    if key not in waited:  # only the first run waits for the other batch
                        waited.add(key)
                        await both_inserted_once.wait()
                    return user
                return check

            async with asyncio.timeout(30):
                answers = await asyncio.gather(
                    one.submit(a, x.username, "from a", "same-a"),
                    one.submit(after_the_first_insert(b, "one"), y.username, "from b", "same-b"),
                    two.submit(b, y.username, "from b", "same-b"),
                    two.submit(after_the_first_insert(a, "two"), x.username, "from a", "same-a"))
            assert [m["body"] for m in answers] == ["from a", "from b", "from b", "from a"]
            assert answers[0] == answers[3] and answers[1] == answers[2]
            assert await _stored(db, a) == ["from a"] and await _stored(db, b) == ["from b"]
            assert one.batches + two.batches == 3  # one of the two ran twice
        finally:
            await one.close()
            await two.close()
            await db.close()

    asyncio.run(main())


def test_a_cancelled_sender_whose_send_fails_logs_nothing(db_url: str) -> None:
    """The sender went away (its stream was cut) and its send is then refused: the answer is
    read by nobody, and asyncio must not report "Future exception was never retrieved"."""
    reported: list[dict[str, Any]] = []

    async def work(db: Database, hub: EventHub, queue: SendQueue) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reported.append(ctx))
        ((_, b),) = await _pairs(db, 1)
        release = asyncio.Event()

        async def slow_then_revoked(conn: AsyncConnection) -> User:
            await release.wait()
            raise Unauthorized("the access token is invalid, expired or revoked")

        task = asyncio.create_task(queue.submit(slow_then_revoked, b.username, "x", "k"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await queue.close()

    _run(db_url, work)
    import gc

    gc.collect()
    assert not [r for r in reported if "never retrieved" in str(r.get("message"))], reported


def test_a_closed_queue_refuses_and_a_stopped_runner_answers_who_waits(db_url: str) -> None:
    async def work(db: Database, hub: EventHub, queue: SendQueue) -> None:
        ((a, b),) = await _pairs(db, 1)
        hold = asyncio.Event()

        async def held(conn: AsyncConnection) -> User:
            await hold.wait()
            return a

        waiting = [asyncio.create_task(queue.submit(held, b.username, "held", "k1")),
                   asyncio.create_task(queue.submit(a, b.username, "queued", "k2"))]
        await asyncio.sleep(0.05)
        for runner in list(queue._runners):  # the process is stopping: its tasks are cancelled
            runner.cancel()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(r, UnavailableError) for r in results), results
        await queue.close()
        with pytest.raises(UnavailableError):
            await queue.submit(a, b.username, "late", "k3")
        assert await _stored(db, a) == []

    _run(db_url, work)


def test_a_value_the_database_refuses_fails_only_its_own_send(pg_url: str) -> None:
    """PostgreSQL refuses a NUL in text for the whole transaction; the batch is then run again
    one send per transaction, so only that send gets the storage layer's ValueRefused, which the
    API answers 400 (its validation rejects NUL before this; the queue must not depend on it)."""

    async def main() -> None:
        db = Database.open(pg_url)
        queue = SendQueue(db, EventHub(app="gc-nul"))
        try:
            ((a, b),) = await _pairs(db, 1)
            results = await asyncio.gather(queue.submit(a, b.username, "fine", "k1"),
                                           queue.submit(a, b.username, "bad\x00", "k2"),
                                           queue.submit(a, b.username, "also fine", "k3"),
                                           return_exceptions=True)
            assert isinstance(results[1], ValueRefused), results
            assert isinstance(to_http(results[1]), BadRequest)
            assert [r["body"] for r in (results[0], results[2])] == ["fine", "also fine"]
            assert await _stored(db, a) == ["fine", "also fine"]
            assert queue.batches == 4  # the batch of three, then each alone
        finally:
            await queue.close()
            await db.close()

    asyncio.run(main())
