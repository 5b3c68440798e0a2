"""Soak: a real ``interapp serve`` process under steady, paced traffic for a few minutes keeps a
flat memory (``VmRSS``) and answers everything.

Traffic, at ``RATE`` requests per second in total, for ``$INTERAPP_SOAK_SECONDS`` (default 150):
messages both ways between several buddy pairs, ``GET /v1/contacts``, rotating refresh grants,
every ``RUSH_EVERY`` seconds a rush of concurrent password logins (as after a restart), and on
every account an event stream that disconnects every few seconds and resumes with ``?since=`` —
each stream must see every ``seq`` of its account exactly once and in order.

Memory is checked two ways: the RSS after the soak stays within ``MAX_RSS_RATIO`` of the RSS
after a warm-up that served one request of every kind but a password login (issue 12), and it
is flat over the soak (the last third of the samples against the middle third). The sessions'
tokens are issued straight into the database, so the server hashes no password before the
warm-up: what the logins leave behind (before ``interapp.server.memory``: a 19 MiB argon2
block kept per hashing thread, +40 MiB) shows.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from server_kit import (
    PASSWORD,
    Client,
    Endpoint,
    Session,
    app_name,
    db_run,
    make_buddies,
    make_client,
    make_users,
    metric,
    next_event,
    rss_mib,
    serve,
    stream,
)

from interapp.server import accounts
from interapp.server.oauth import issue

SOAK_SECONDS = float(os.environ.get("INTERAPP_SOAK_SECONDS") or 150)
RATE = 50.0  # requests per second, all kinds together
PAIRS = 3
SAMPLE_EVERY = 3.0
RECONNECT_EVERY = 6.0  # seconds each stream stays connected before it resumes on a new one
RUSH_EVERY = 15.0  # seconds between two rushes of password logins
RUSH_LOGINS = 8  # concurrent password logins per rush
MAX_RSS_RATIO = 1.3  # RSS after the soak / RSS after the warm-up (issue 12)
# Memory is "flat" when the median RSS of the last third of the samples exceeds the median of
# the middle third by less than both limits. Measured (before the login rushes were added):
# +0.01 MiB (+0.00 %) on a 150 s run, +0.35 MiB on a 45 s run whose 9 s warm-up was too short
# for the SQLite page cache to settle; with them, RSS 88.8 MiB after the warm-up and 92.5 MiB
# after a 60 s soak (1.04x; 1.47x before interapp.server.memory). The two thirds are a third
# of the sampled time apart (40 s = 2,000 requests at the default length), so a leak of 1 KiB
# per request (~2 MiB) fails, with a wide margin over the noise.
MAX_GROWTH_MIB = 1.5
MAX_GROWTH_FRACTION = 0.02


class Resumer(threading.Thread):
    """One account's event stream: reconnects every ``RECONNECT_EVERY`` seconds with
    ``?since=<last seq>`` and checks that the seqs it sees go up by exactly one."""

    def __init__(self, server: Endpoint, session: Session, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.server, self.session, self.stop = server, session, stop
        self.last, self.connects, self.messages = 0, 0, 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set() and not self.errors:
            try:
                with stream(self.server, self.session.access, since=self.last) as ws:
                    self.connects += 1
                    until = time.monotonic() + RECONNECT_EVERY
                    while time.monotonic() < until:
                        try:
                            event = next_event(ws, timeout=max(0.05, until - time.monotonic()))
                        except TimeoutError:
                            break
                        if event["seq"] != self.last + 1:
                            self.errors.append(f"seq {event['seq']} after {self.last}")
                            return
                        self.last = int(event["seq"])
                        self.messages += event["type"] == "message"
            except Exception as exc:  # the test thread reports it
                self.errors.append(f"{type(exc).__name__}: {exc}")


class Rush(threading.Thread):
    """Every ``RUSH_EVERY`` seconds, ``RUSH_LOGINS`` password logins at once."""

    def __init__(self, url: str, client: Client, users: list[accounts.User]) -> None:
        super().__init__(daemon=True)
        self.url, self.client, self.users = url, client, users
        self.stop = threading.Event()
        self.logins = 0
        self.errors: list[str] = []

    def login(self, user: accounts.User) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            resp = http.post("/oauth/token", auth=self.client.basic(), data={
                "grant_type": "password", "username": user.username, "password": PASSWORD})
        if resp.status_code != 200:
            self.errors.append(f"password login: {resp.status_code} {resp.text[:200]}")
        else:
            self.logins += 1

    def run(self) -> None:
        while not self.stop.wait(RUSH_EVERY):
            rush = [threading.Thread(target=self.login, args=(self.users[i % len(self.users)],))
                    for i in range(RUSH_LOGINS)]
            for thread in rush:
                thread.start()
            for thread in rush:
                thread.join(120)


class Traffic(threading.Thread):
    """Paced requests, cycling through messages, contact lists and refresh grants."""

    def __init__(self, url: str, client: Client, pairs: list[tuple[Session, Session]]) -> None:
        super().__init__(daemon=True)
        self.url, self.client, self.pairs = url, client, pairs
        self.stop = threading.Event()
        self.counts = {"message": 0, "contacts": 0, "refresh": 0}
        self.events: dict[str, int] = {s.username: 1 for pair in pairs for s in pair}
        self.errors: list[str] = []

    def run(self) -> None:
        ops: list[Callable[[httpx.Client, int], None]] = [self.message] * 7 + [
            self.contacts, self.contacts, self.refresh]
        with httpx.Client(base_url=self.url, timeout=30) as http:
            start, n = time.monotonic(), 0
            while not self.stop.is_set():
                try:
                    ops[n % len(ops)](http, n)
                except Exception as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                n += 1
                delay = start + n / RATE - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)

    def message(self, http: httpx.Client, n: int) -> None:
        """A message one way or the other within one pair."""
        a, b = self.pairs[n % len(self.pairs)]
        sender, to = (a, b) if n % 2 else (b, a)
        resp = http.post("/v1/messages", headers=sender.headers(), json={
            "to": to.username, "body": f"soak {n} " + "x" * (n % 500), "client_msg_id": f"s{n}"})
        self.check(resp, 201)
        self.counts["message"] += 1
        self.events[sender.username] += 1
        self.events[to.username] += 1

    def contacts(self, http: httpx.Client, n: int) -> None:
        """A contact list, which must name the buddy."""
        a, b = self.pairs[n % len(self.pairs)]
        resp = http.get("/v1/contacts", headers=a.headers())
        self.check(resp, 200)
        if [c["username"] for c in resp.json()["contacts"]] != [b.username]:
            self.errors.append(f"contacts of {a.username}: {resp.text}")
        self.counts["contacts"] += 1

    def refresh(self, http: httpx.Client, n: int) -> None:
        """A rotating refresh grant; the session carries the new tokens on."""
        session = self.pairs[n % len(self.pairs)][n % 2]
        resp = http.post("/oauth/token", auth=self.client.basic(), data={
            "grant_type": "refresh_token", "refresh_token": session.tokens["refresh_token"]})
        self.check(resp, 200)
        session.tokens = resp.json()
        self.counts["refresh"] += 1

    def check(self, resp: httpx.Response, status: int) -> None:
        if resp.status_code != status:
            self.errors.append(f"{resp.request.method} {resp.request.url.path}: "
                               f"{resp.status_code} {resp.text[:200]}")


def issued_session(db: str, client: Client, user: accounts.User, http: httpx.Client) -> Session:
    """A session whose tokens are written straight into the database (no password hashed)."""
    tokens = db_run(db, lambda conn: issue.issue_pair(
        conn, user_id=user.id, client_id=client.client_id, grant_type="password",
        access_ttl=3600, refresh_ttl=86400))
    return Session(user, tokens, http)


def one_of_each(proc_url: str, traffic: Traffic, session: Session) -> None:
    """The warm-up: one request of every kind the soak sends but password logins (which the
    benchmarks' "idle" figure does not include either), and the operator's."""
    with httpx.Client(base_url=proc_url, timeout=30) as http:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert http.get(path).status_code == 200
        assert http.get("/v1/me", headers=session.headers()).status_code == 200
        traffic.message(http, -1)  # n < 0: the soak's own n never repeats its client_msg_id
        traffic.contacts(http, -1)
        traffic.refresh(http, -1)
    assert traffic.errors == [], traffic.errors


def thirds(samples: list[float]) -> tuple[float, float]:
    """Median of the middle third and of the last third (a sample taken while a rush's hashes
    hold their 19 MiB blocks is one of a few, and does not move a median)."""
    k = len(samples) // 3
    return statistics.median(samples[k:2 * k]), statistics.median(samples[2 * k:])


@pytest.mark.slow
def test_soak_memory_is_flat_and_all_traffic_succeeds(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'soak.db'}"
    warm_up = SOAK_SECONDS / 5
    with serve(app_name("soak"), db, None, None, tmp_path / "serve.log") as proc, \
            httpx.Client(base_url=proc.url, timeout=30) as http:
        server = Endpoint(proc.url, proc.ws_url, db)
        client = make_client(db)
        users = make_users(db, 2 * PAIRS, "soak")
        sessions = [issued_session(db, client, user, http) for user in users]
        pairs = [(sessions[2 * i], sessions[2 * i + 1]) for i in range(PAIRS)]
        for a, b in pairs:
            make_buddies(db, a.user, b.user)  # seq 1 of each
        stop = threading.Event()
        readers = [Resumer(server, s, stop) for s in sessions]
        traffic = Traffic(proc.url, client, pairs)
        rush = Rush(proc.url, client, users)
        pid = proc.proc.pid
        one_of_each(proc.url, traffic, sessions[0])
        time.sleep(1.0)
        warm_rss = rss_mib(pid)
        for thread in (*readers, traffic, rush):
            thread.start()
        start = time.monotonic()
        samples: list[float] = []
        fds: list[int] = []
        next_sample = start + warm_up
        while time.monotonic() < start + SOAK_SECONDS:
            time.sleep(max(0.0, next_sample - time.monotonic()))
            samples.append(rss_mib(pid))
            fds.append(len(os.listdir(f"/proc/{pid}/fd")))
            next_sample += SAMPLE_EVERY
            assert traffic.is_alive() and not traffic.errors, traffic.errors[:5]
            assert not rush.errors, rush.errors[:5]
        traffic.stop.set()
        rush.stop.set()
        traffic.join(30)
        rush.join(150)
        deadline = time.monotonic() + 30  # the streams catch up with the last events
        while any(r.last < traffic.events[r.session.username] for r in readers):
            assert all(r.is_alive() for r in readers), [r.errors for r in readers]
            assert time.monotonic() < deadline, [(r.last, traffic.events[r.session.username])
                                                 for r in readers]
            time.sleep(0.1)
        stop.set()
        for reader in readers:
            reader.join(RECONNECT_EVERY + 15)
            assert not reader.is_alive(), "a stream reader did not stop"
        # the client's close can finish before the server's handler has counted the stream out
        gone_by = time.monotonic() + 5
        while (streams_left := metric(proc.url, "interapp_active_streams")) and \
                time.monotonic() < gone_by:
            time.sleep(0.1)
        end_rss = rss_mib(pid)

    middle, last = thirds(samples)
    elapsed = time.monotonic() - start
    requests = sum(traffic.counts.values())
    print(f"\nsoak {elapsed:.0f} s: {traffic.counts} = {requests / SOAK_SECONDS:.1f} req/s; "
          f"stream connects {sum(r.connects for r in readers)}, events seen "
          f"{sum(r.last for r in readers)}\nRSS MiB every {SAMPLE_EVERY:g} s after "
          f"{warm_up:.0f} s: {' '.join(f'{s:.1f}' for s in samples)}\nmiddle third "
          f"{middle:.2f} MiB, last third {last:.2f} MiB ({last - middle:+.2f}, "
          f"{(last - middle) / middle:+.2%}); open fds {fds[0]} -> {fds[-1]}\n"
          f"RSS after the warm-up {warm_rss:.1f} MiB, after the soak {end_rss:.1f} MiB "
          f"({end_rss / warm_rss:.2f}x); password logins {rush.logins}")
    assert traffic.errors == [] and rush.errors == []
    assert rush.logins >= RUSH_LOGINS * int(SOAK_SECONDS // RUSH_EVERY - 1)
    assert [r.errors for r in readers] == [[] for _ in readers]
    assert [r.last for r in readers] == [traffic.events[s.username] for s in sessions]
    assert sum(r.messages for r in readers) == 2 * traffic.counts["message"]
    assert requests >= 0.9 * RATE * SOAK_SECONDS  # the pace was held
    assert min(r.connects for r in readers) >= SOAK_SECONDS / RECONNECT_EVERY / 2
    assert streams_left == 0
    assert fds[-1] <= fds[0] + 10
    assert end_rss <= MAX_RSS_RATIO * warm_rss, f"{end_rss:.1f} MiB after {warm_rss:.1f} MiB"
    assert last - middle < MAX_GROWTH_MIB
    assert last - middle < MAX_GROWTH_FRACTION * middle
