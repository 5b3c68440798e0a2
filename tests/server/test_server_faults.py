"""Fault tests on real ``interapp serve`` processes: a worker killed with SIGKILL mid-flow, and
PostgreSQL and Redis restarted under load.

Nothing is mocked: the servers are real subprocesses on 127.0.0.1, the receiver is the real
``interapp`` plug-in consuming its event stream, and the outages are real — a worker process
killed by signal, and a PostgreSQL and a Redis of the test's own (``interapp.testing.services``)
stopped and started again. The shared CI services are never touched.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from server_kit import (
    PASSWORD,
    Client,
    Endpoint,
    PluginReceiver,
    Session,
    app_name,
    client_on_worker,
    established_peers,
    login,
    make_buddies,
    make_client,
    serve,
    worker_pids,
)

from interapp.testing.services import PrivatePostgres, PrivateRedis

MESSAGES = 1000
KILL_AT = 300  # received messages before the SIGKILL


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _stream_worker(workers: set[int], port: int, timeout: float = 10) -> int:
    """The worker holding the only open connection (the receiver's stream) on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        holders = {pid for pid in workers if established_peers(pid, port)}
        if len(holders) == 1:
            return holders.pop()
        assert time.monotonic() < deadline, f"stream holders: {holders}"
        time.sleep(0.05)


def _send_until_accepted(http: httpx.Client, sender: Session, to: str, body: str, msg_id: str,
                         trouble: list[str]) -> dict[str, Any]:
    """POST one message until it is accepted, retrying the *same* ``client_msg_id`` after a
    dropped connection or a 503 (each such incident is appended to ``trouble``)."""
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, f"{msg_id} was never accepted: {trouble[-5:]}"
        try:
            resp = http.post("/v1/messages", headers=sender.headers(), json={
                "to": to, "body": body, "client_msg_id": msg_id})
        except httpx.TransportError as exc:
            trouble.append(type(exc).__name__)
        else:
            if resp.status_code == 201:
                return dict(resp.json())
            trouble.append(f"HTTP {resp.status_code}")
            assert resp.status_code == 503 and resp.headers.get("retry-after"), resp.text
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_of_one_worker_loses_and_duplicates_no_message(
        pg_url: str, redis_url: str, tmp_path: Path) -> None:
    """SIGKILL one of two workers while 1,000 messages flow: each arrives once, in order.

    The killed worker is the one serving the receiver's event stream, and the sender's
    keep-alive connection is on it too. The sender retries with the same ``client_msg_id``
    after a dropped connection, so a message committed just before the kill is not stored
    twice; the receiver (the real ``interapp`` plug-in) resumes from its last cursor on the
    surviving worker. uvicorn's supervisor notices the death within about half a second and
    starts a replacement worker (``/healthz`` then names a new PID); the surviving worker carries
    the load meanwhile.
    """
    with serve(app_name("kill9"), pg_url, redis_url, None, tmp_path / "serve.log",
               extra=("--workers", "2")) as srv:
        client = make_client(pg_url)
        handle = Endpoint(srv.url, srv.ws_url, pg_url)
        with httpx.Client(base_url=srv.url) as http:
            alice, bob = login(handle, http, client), login(handle, http, client)
        make_buddies(pg_url, alice.user, bob.user)
        workers = worker_pids(srv.url, 2)
        receiver = PluginReceiver(srv.url, client, alice.username).start()
        victim = _stream_worker(workers, _port(srv.url))
        sender = client_on_worker(srv.url, victim)
        killed_at: list[float] = []
        replaced_at: list[float] = []

        def kill_when_flowing() -> None:
            while len(receiver.messages()) < KILL_AT and not sender.is_closed:
                time.sleep(0.005)
            os.kill(victim, signal.SIGKILL)
            killed_at.append(time.monotonic())
            deadline = time.monotonic() + 30
            while not worker_pids(srv.url, 1) - workers and time.monotonic() < deadline:
                time.sleep(0.1)  # until uvicorn's replacement worker answers
            replaced_at.append(time.monotonic())

        killer = threading.Thread(target=kill_when_flowing, daemon=True)
        killer.start()
        trouble: list[str] = []
        started = time.monotonic()
        try:
            accepted = [_send_until_accepted(sender, bob, alice.username, f"m{i}", f"k{i}",
                                             trouble) for i in range(MESSAGES)]
            receiver.wait_messages(MESSAGES, timeout=60)
            time.sleep(1.0)  # anything extra (a duplicate) would arrive now
            got = receiver.messages()
        finally:
            sender.close()
            killer.join(timeout=40)
            receiver.stop()
        elapsed = time.monotonic() - started
        assert killed_at and replaced_at, "the worker was never killed"

        assert [m["body"] for m in got] == [f"m{i}" for i in range(MESSAGES)]
        seqs = [int(m["seq"]) for m in got]
        assert seqs == list(range(seqs[0], seqs[0] + MESSAGES))
        assert [m["message_id"] for m in got] == [a["message_id"] for a in accepted]
        assert receiver.drops, "the stream on the killed worker should have dropped"
        assert not receiver.failures, receiver.failures
        kinds = Counter(trouble)  # empty when the kill fell between two requests
        assert set(kinds) <= {"RemoteProtocolError", "ReadError", "WriteError", "ConnectError",
                              "HTTP 503"}, kinds

        # the server really dedupes: the same client_msg_id again is the same message
        with httpx.Client(base_url=srv.url) as http:
            again = http.post("/v1/messages", headers=bob.headers(), json={
                "to": alice.username, "body": "m0", "client_msg_id": "k0"})
            assert again.status_code == 201 and again.json() == accepted[0]
            clash = http.post("/v1/messages", headers=bob.headers(), json={
                "to": alice.username, "body": "other", "client_msg_id": "k0"})
            assert clash.status_code == 409, clash.text

        # uvicorn's supervisor replaced the killed worker
        now = worker_pids(srv.url, 2)
        assert victim not in now and len(now - workers) == 1, (workers, now)
        print(f"\n1,000 messages in {elapsed:.1f} s; sender incidents {dict(kinds)}; stream "
              f"drops {len(receiver.drops)}; replacement worker {now - workers} answering "
              f"{replaced_at[0] - killed_at[0]:.1f} s after the kill")


# --- PostgreSQL and Redis restarted under load -------------------------------------------------


@dataclass
class Sample:
    """One request of the load: when, what, how it ended, how long it took."""

    kind: str
    started: float
    seconds: float
    status: int | str  # HTTP status, or the transport error's name
    retry_after: str | None = None
    msg_id: str | None = None


@dataclass
class Load:
    """Message sends, buddy-list reads and password logins, each on a thread of its own and a
    new connection per request (so both workers get them)."""

    url: str
    client: Client
    sender: Session
    to: str
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        counter = iter(range(10**6))

        def send(http: httpx.Client) -> tuple[httpx.Response, str]:
            msg_id = f"load-{next(counter)}"
            return http.post("/v1/messages", headers=self.sender.headers(), json={
                "to": self.to, "body": f"body of {msg_id}", "client_msg_id": msg_id}), msg_id

        def contacts(http: httpx.Client) -> tuple[httpx.Response, str | None]:
            return http.get("/v1/contacts", headers=self.sender.headers()), None

        def log_in(http: httpx.Client) -> tuple[httpx.Response, str | None]:
            return http.post("/oauth/token", auth=self.client.basic(), data={
                "grant_type": "password", "username": self.sender.username,
                "password": PASSWORD}), None

        for kind, call, pause in (("send", send, 0.02), ("contacts", contacts, 0.03),
                                  ("login", log_in, 0.15)):
            thread = threading.Thread(target=self._loop, args=(kind, call, pause), daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def _loop(self, kind: str, call: Callable[[httpx.Client], tuple[httpx.Response, str | None]],
              pause: float) -> None:
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        while not self._stop.is_set():
            started = time.monotonic()
            msg_id = None
            try:
                with httpx.Client(base_url=self.url, timeout=15, limits=no_reuse) as http:
                    resp, msg_id = call(http)
                status: int | str = resp.status_code
                retry_after = resp.headers.get("retry-after")
            except httpx.TransportError as exc:
                status, retry_after = type(exc).__name__, None
            self.samples.append(Sample(kind, started, time.monotonic() - started, status,
                                       retry_after, msg_id))
            time.sleep(pause)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
            assert not thread.is_alive()

    def between(self, start: float, end: float, kind: str | None = None) -> list[Sample]:
        """Samples (of one kind) started at ``start`` or later and finished before ``end``."""
        return [s for s in list(self.samples) if start <= s.started
                and s.started + s.seconds < end and (kind is None or s.kind == kind)]

    def recovered(self, since: float, kinds: tuple[str, ...], timeout: float = 30) -> float:
        """Seconds from ``since`` until every kind has succeeded again."""
        deadline = time.monotonic() + timeout
        while True:
            firsts = [min((s.started + s.seconds for s in self.between(since, 1e18, kind)
                           if s.status in (200, 201)), default=None) for kind in kinds]
            if all(f is not None for f in firsts):
                return max(f for f in firsts if f is not None) - since
            assert time.monotonic() < deadline, f"{kinds} did not recover within {timeout} s"
            time.sleep(0.1)


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[PrivatePostgres]:
    """A PostgreSQL of this test's own, which it may stop and start."""
    with PrivatePostgres(tmp_path / "pg") as pg:
        yield pg


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of this test's own, which it may kill and start."""
    with PrivateRedis(tmp_path / "redis") as rd:
        yield rd


def _assert_clean_503s(samples: list[Sample]) -> None:
    """Every failure is a prompt 503 with a usable Retry-After: no 500, no hang, no reset."""
    for s in samples:
        assert s.status in (200, 201, 503), s
        assert s.seconds < 5, s
        if s.status == 503:
            assert s.retry_after is not None and int(s.retry_after) >= 1, s


def _wait_subscribers(rd: PrivateRedis, channel: str, count: int, timeout: float = 30) -> None:
    client = redis.Redis.from_url(rd.url)
    try:
        deadline = time.monotonic() + timeout
        while dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) < count:
            assert time.monotonic() < deadline, "the event listeners did not come back"
            time.sleep(0.05)
    finally:
        client.close()


@pytest.mark.slow
def test_postgresql_and_redis_restarts_under_load(
        private_pg: PrivatePostgres, private_redis: PrivateRedis, tmp_path: Path) -> None:
    """PostgreSQL, then Redis, goes away under load and comes back; nobody restarts interapp.

    While PostgreSQL is down every request is answered at once with 503 + ``Retry-After``; when
    it is back requests succeed again. While Redis is down only the password logins (whose
    failure counters live there) get 503 + ``Retry-After``; messages and buddy lists go on,
    and the event streams still deliver (the listener keeps waking them to read the table).
    When Redis is back the listeners subscribe again and events cross processes live. In the
    end every message that got a 201 reached the receiver (the real plug-in) exactly once.
    """
    app = app_name("outage")
    log = tmp_path / "serve.log"
    with serve(app, private_pg.url, private_redis.url, None, log,
               extra=("--workers", "2")) as srv:
        client = make_client(private_pg.url)
        handle = Endpoint(srv.url, srv.ws_url, private_pg.url)
        with httpx.Client(base_url=srv.url) as http:
            alice, bob = login(handle, http, client), login(handle, http, client)
        make_buddies(private_pg.url, alice.user, bob.user)
        workers = worker_pids(srv.url, 2)
        receiver = PluginReceiver(srv.url, client, alice.username).start()
        load = Load(srv.url, client, bob, alice.username).start()
        try:
            time.sleep(1.5)
            private_pg.stop("immediate")  # returns once the postmaster is gone
            pg_down = time.monotonic()
            time.sleep(1)
            drops = len(receiver.drops)
            receiver.reconnect()  # a stream opening now is refused cleanly, and retried
            time.sleep(2)
            pg_up = time.monotonic()
            private_pg.start()
            pg_recovery = load.recovered(pg_up, ("send", "contacts", "login"))
            time.sleep(2)
            private_redis.kill()  # returns once the process is gone
            redis_down = time.monotonic()
            time.sleep(3)
            redis_up = time.monotonic()
            private_redis.start()
            _wait_subscribers(private_redis, f"interapp:{app}:events", len(workers))
            resubscribed = time.monotonic() - redis_up
            redis_recovery = load.recovered(redis_up, ("login",))
            time.sleep(1.5)
        finally:
            load.stop()
        end = time.monotonic()

        samples = load.samples
        _assert_clean_503s(samples)
        # PostgreSQL down: everything is refused (from 0.2 s on: in-flight requests may finish)
        during_pg = load.between(pg_down + 0.2, pg_up)
        for kind in ("send", "contacts", "login"):
            assert [s for s in during_pg if s.kind == kind], kind
        assert all(s.status == 503 for s in during_pg), Counter(s.status for s in during_pg)
        refusals = [d for d in receiver.drops[drops + 1:] if d.startswith("database unavailable")]
        assert refusals, receiver.drops[drops:]
        # Redis down: only the logins depend on it
        during_redis = load.between(redis_down + 0.2, redis_up)
        assert all(s.status == 503 for s in during_redis if s.kind == "login")
        assert [s for s in during_redis if s.kind == "login"]
        assert all(s.status in (200, 201) for s in during_redis if s.kind != "login")
        # ... and streams still deliver meanwhile (from the table, at the listener's retry pace:
        # 0.5 s, 1 s, 2 s): what was accepted early in the outage arrived before its end
        early = {s.msg_id for s in load.between(redis_down + 0.2, redis_up - 2.2, "send")}
        arrived = {m["client_msg_id"] for m in receiver.messages()
                   if receiver.received_at[int(m["seq"])] < redis_up}
        assert early and early <= arrived, early - arrived
        # after each recovery (and a second of grace) nothing fails any more
        steady = (load.between(pg_up + pg_recovery + 1, redis_down)
                  + load.between(redis_up + redis_recovery + 1, end))
        assert steady and all(s.status in (200, 201) for s in steady)

        # live events cross processes again: one message through each worker arrives at once
        for pid in sorted(workers):
            http = client_on_worker(srv.url, pid)
            try:
                count = len(receiver.messages()) + 1
                sent = time.monotonic()
                resp = http.post("/v1/messages", headers=bob.headers(), json={
                    "to": alice.username, "body": f"via {pid}", "client_msg_id": f"via-{pid}"})
                assert resp.status_code == 201, resp.text
                assert receiver.wait_messages(count, 3)[-1]["body"] == f"via {pid}"
                assert time.monotonic() - sent < 3
            finally:
                http.close()

        # every acknowledged message is there exactly once; the others can be retried safely
        sends = [s for s in samples if s.kind == "send"]
        acknowledged = {s.msg_id for s in sends if s.status == 201}
        refused = [s.msg_id for s in sends if s.status != 201 and s.msg_id]
        try:
            time.sleep(1.0)
            first = receiver.messages()
            counts = Counter(m["client_msg_id"] for m in first)
            assert acknowledged <= set(counts)
            assert max(counts.values()) == 1
            with httpx.Client(base_url=srv.url) as http:
                for msg_id in refused:
                    resp = http.post("/v1/messages", headers=bob.headers(), json={
                        "to": alice.username, "body": f"body of {msg_id}",
                        "client_msg_id": msg_id})
                    assert resp.status_code == 201, resp.text
            every = acknowledged | set(refused) | {f"via-{pid}" for pid in workers}
            receiver.wait_messages(len(every), 20)
            time.sleep(1.0)
            final = receiver.messages()
        finally:
            receiver.stop()
        assert Counter(m["client_msg_id"] for m in final) == Counter(every)
        seqs = [int(e["seq"]) for e in receiver.events]
        assert seqs == list(range(1, len(seqs) + 1))
        assert not receiver.failures, receiver.failures

    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert not [r for r in records if r["level"] in ("error", "critical")]  # nothing unexpected
    statuses = Counter((s.kind, s.status) for s in samples)
    print(f"\nrequests {len(samples)}: {dict(statuses)}; PostgreSQL down {pg_up - pg_down:.1f} s "
          f"(503s {sum(s.status == 503 for s in during_pg)}), all kinds OK {pg_recovery:.2f} s "
          f"after its start; Redis down {redis_up - redis_down:.1f} s (login 503s "
          f"{sum(s.status == 503 for s in during_redis)}), listeners back {resubscribed:.2f} s "
          f"and logins OK {redis_recovery:.2f} s after its start; "
          f"{len(acknowledged)} acknowledged + {len(refused)} retried messages, each once; "
          f"slowest request {max(s.seconds for s in samples):.2f} s; "
          f"stream drops {len(receiver.drops)} (refused while PostgreSQL was down: "
          f"{len(refusals)})")
