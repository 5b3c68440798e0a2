"""Benchmark of ONE interapp application-server worker (issue 2, "Tests" → benchmark).

    .venv/bin/python bench/server_bench.py [--quick] [--out docs/performance.md]
                                           [--backend auto|sqlite|postgres|both]
                                           [--profile DIR]

What it does, in one run:

* starts the yardstick — a bare Starlette JSON endpoint (``bench/bare_server.py``) on uvicorn in
  a subprocess with the same uvicorn settings as ``interapp serve`` — and measures its req/s;
* for each database back-end (SQLite in a fresh temporary ``INTERAPP_HOME``; PostgreSQL in a
  fresh database on 127.0.0.1:5432 when reachable), seeds users, a client, 100 buddies and
  token chains directly through ``interapp.server.accounts`` / ``social`` / ``oauth.issue`` on
  the database, then starts a real ``interapp serve`` subprocess (one worker, port 0) and
  measures, from this separate load-generator process:
  refresh-token grants/s (each worker coroutine follows its own rotating chain), password
  grants/s, ``GET /v1/contacts`` (100 buddies) req/s, ``GET /v1/me`` and ``GET /healthz`` req/s
  (to split auth and framework cost), message send→receive latency over ``/v1/events``
  (the max send rate first, then paced at half of it; the receiver uses the ``websockets``
  library), and the p99 of ``GET /v1/me`` while password logins saturate the hashing threads;
* prints one progress line per phase and, with ``--out``, writes the results table, the
  targets and the machine facts into its own block of a Markdown file (between
  ``<!-- server-bench:begin -->`` and ``<!-- server-bench:end -->``); the rest of the file,
  hand-written notes included, is kept.

The load generator is a raw asyncio HTTP/1.1 keep-alive client on uvloop (much cheaper per
request than httpx, so the 2 cores go to the server rather than to the client). Every phase is
bounded in time (``--duration``, default 8 s plus a 1 s warm-up; ``--quick``: 2 s plus 0.3 s) and
in concurrency (``--concurrency``, default 16 connections). All traffic goes to 127.0.0.1.
Latencies of paced (open-loop) phases are measured from the *intended* send time, so a stalled
server cannot hide its stalls (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit import (
    BIN,
    CpuMeter,
    clean_env,
    cpu_model,
    met,
    percentile,
    seeding,
    versions,
    write_block,
)
from benchkit import Proc as Server

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
APP = "bench"
PASSWORD = "bench-password-123"  # a throw-away benchmark account
perf = time.perf_counter

# Targets of issue 2 (2-core machine, one worker).
TARGET_REFRESH = 1500.0
TARGET_CONTACTS_RATIO = 0.4
TARGET_MSG_P99_MS = 25.0
TARGET_SATURATED_P99_MS = 50.0
GRACE = 5.0  # seconds paced requests may still take after their phase
NOISY_CPU = 0.3  # cores used by foreign processes above which a phase is flagged
PACKAGES = ("uvicorn", "uvloop", "httptools", "websockets", "starlette", "fastapi", "sqlalchemy",
            "aiosqlite", "psycopg", "argon2-cffi", "pydantic")
PHASES = ("bare", "contacts", "me", "healthz", "refresh", "password", "messages", "saturation")


# --------------------------------------------------------------------------- raw HTTP client

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)


class HttpConn:
    """One HTTP/1.1 keep-alive connection to 127.0.0.1 (requests are pre-built bytes)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        try:
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            match = _CONTENT_LENGTH.search(head)
            if match:
                body = await self.reader.readexactly(int(match.group(1)))
            elif _CHUNKED.search(head):
                body = await self._chunked()
            else:
                body = b""
            if _CLOSE.search(head):
                self.close()
            return status, body
        except BaseException:
            self.close()
            raise

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await self.reader.readexactly(size + 2))
            if size == 0:
                return b"".join(p[:-2] for p in parts)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def build(method: str, path: str, port: int, headers: dict[str, str] | None = None,
          body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def form(**params: str) -> bytes:
    from urllib.parse import urlencode

    return urlencode(params).encode()


# --------------------------------------------------------------------------- measurement

@dataclass
class Result:
    """One phase's outcome."""

    name: str
    count: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds
    server_cpu: float | None = None  # cores used by the server process during the phase
    client_cpu: float | None = None  # cores used by this load generator during the phase
    other_cpu: float | None = None  # cores used by every other process (PostgreSQL included)
    error_samples: Counter[str] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        """The p-th percentile latency in milliseconds (nearest rank)."""
        return percentile(self.latencies, p) * 1000

    def error(self, sample: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5 or sample in self.error_samples:
            self.error_samples[sample[:160]] += 1


def meter(pid: int | None) -> CpuMeter:
    """The kit's CPU meter on the server's process tree (none: the machine only)."""
    return CpuMeter({"server": pid} if pid is not None else {})


def record_cpu(cpu: CpuMeter, result: Result) -> None:
    """End ``cpu``'s interval into ``result``'s server / load generator / other cores."""
    split = result.extra["cpu"] = cpu.stop()
    result.server_cpu = split.get("server")
    result.client_cpu, result.other_cpu = split["loadgen"], split["other"]


Step = Callable[[HttpConn, int], Awaitable[tuple[bool, str]]]


async def closed_loop(name: str, port: int, concurrency: int, warmup: float, duration: float,
                      step: Step, cpu: CpuMeter) -> Result:
    """``concurrency`` workers each send a request as soon as the previous one answers.

    Completions inside the measurement window (after the warm-up) are counted.
    """
    result = Result(name)
    t_measure = perf() + warmup
    t_end = t_measure + duration

    async def worker(i: int) -> None:
        conn = HttpConn(port)
        try:
            while perf() < t_end:
                t0 = perf()
                try:
                    ok, why = await step(conn, i)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        ValueError) as exc:
                    conn.close()
                    ok, why = False, f"{type(exc).__name__}: {exc}"
                t1 = perf()
                if t_measure <= t1 <= t_end:
                    if ok:
                        result.count += 1
                        result.latencies.append(t1 - t0)
                    else:
                        result.error(why)
        finally:
            conn.close()

    await asyncio.sleep(0)
    measure = asyncio.create_task(_measure_window(cpu, result, warmup, duration))
    await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(concurrency))),
                           warmup + duration + 60)
    await measure
    result.seconds = duration
    return result


async def _measure_window(cpu: CpuMeter, result: Result, warmup: float, duration: float) -> None:
    await asyncio.sleep(warmup)
    cpu.start()
    await asyncio.sleep(duration)
    record_cpu(cpu, result)


async def open_loop(rate: float, duration: float,
                    fire: Callable[[float], Coroutine[Any, Any, Any]],
                    grace: float = 5.0) -> int:
    """Call ``fire(intended_time)`` ``rate`` times a second for ``duration`` seconds.

    Calls are started on schedule whether or not earlier ones have finished.
    """
    n = max(1, int(rate * duration))
    t0 = perf() + 0.01
    tasks: list[asyncio.Task[Any]] = []
    for i in range(n):
        t = t0 + i / rate
        delay = t - perf()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(t)))
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    return n


class ConnPool:
    """A bounded pool of keep-alive connections for open-loop phases."""

    def __init__(self, port: int, size: int) -> None:
        self.queue: asyncio.Queue[HttpConn] = asyncio.Queue()
        for _ in range(size):
            self.queue.put_nowait(HttpConn(port))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        conn = await self.queue.get()
        try:
            return await conn.request(raw)
        finally:
            self.queue.put_nowait(conn)

    def close(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait().close()


# --------------------------------------------------------------------------- processes

class Profiler:
    """Optional py-spy sampling of the server during each phase (raw collapsed stacks)."""

    def __init__(self, directory: Path | None) -> None:
        self.dir = directory
        self.exe = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
        if directory is not None:
            if self.exe is None:
                raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
            directory.mkdir(parents=True, exist_ok=True)

    def start(self, pid: int, label: str, seconds: float) -> subprocess.Popen[bytes] | None:
        if self.dir is None or self.exe is None:
            return None
        out = self.dir / f"{label}.txt"
        return subprocess.Popen(
            [self.exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
             "--rate", "250", "--format", "raw", "--threads", "--nonblocking",
             "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def finish(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.terminate()


# --------------------------------------------------------------------------- seeding

@dataclass
class Seed:
    client_id: str
    client_secret: str
    contacts_user_token: str  # access token of "alice", who has 100 buddies
    sender_token: str
    receiver_token: str
    refresh_tokens: list[str]
    login_users: list[str]


async def seed(db_url: str, *, buddies: int, chains: int, login_users: int) -> Seed:
    """Create the accounts, client, buddies and tokens directly on the database."""
    async with seeding(db_url, PASSWORD) as sd:
        alice = await sd.user("alice")
        for i in range(buddies):
            await sd.buddies(alice, await sd.user(f"buddy{i:03d}", f"Buddy number {i}"))
        sender, receiver = await sd.user("sender"), await sd.user("receiver")
        await sd.buddies(sender, receiver)
        names = [f"login{i:02d}" for i in range(login_users)]
        for name in names:
            await sd.user(name)
        cid, secret = await sd.client("bench")
        assert secret is not None
        alice_at, sender_at, receiver_at = [
            (await sd.tokens(u.id, cid))["access_token"] for u in (alice, sender, receiver)]
        refresh = [(await sd.tokens(alice.id, cid))["refresh_token"] for _ in range(chains)]
    return Seed(cid, secret, alice_at, sender_at, receiver_at, refresh, names)


def pg_available(base: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(_pg_dsn(base, "postgres"), connect_timeout=2):
            return True
    except Exception:
        return False


def _pg_dsn(base: str, db: str) -> str:
    return base.replace("postgresql+psycopg://", "postgresql://").rstrip("/") + f"/{db}"


def pg_create(base: str) -> tuple[str, str]:
    import psycopg

    name = f"interapp_bench_{secrets.token_hex(4)}"
    with psycopg.connect(_pg_dsn(base, "postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return name, base.rstrip("/") + f"/{name}"


def pg_drop(base: str, name: str) -> None:
    import psycopg

    with contextlib.suppress(Exception), psycopg.connect(_pg_dsn(base, "postgres"),
                                                         autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --------------------------------------------------------------------------- phases

@dataclass
class Opts:
    warmup: float
    duration: float
    concurrency: int
    probe_rate: float
    profiler: Profiler
    server_cpus: set[int] | None = None  # --pin: the servers' CPUs
    client_cpus: set[int] | None = None  # --pin: this load generator's CPU
    server_env: dict[str, str] = field(default_factory=dict)  # --server-env experiments
    only: set[str] | None = None  # --only: the phases to run
    interapp_cmd: list[str] = field(default_factory=lambda: [str(BIN / "interapp")])

    def wants(self, phase: str) -> bool:
        return self.only is None or phase in self.only


def line(backend: str, r: Result, unit: str = "/s") -> str:
    cpu = ""
    if r.server_cpu is not None:
        cpu = f"  server cpu {r.server_cpu:.2f}"
    if r.client_cpu is not None:
        cpu += f"  loadgen cpu {r.client_cpu:.2f}"
    if r.other_cpu is not None:
        cpu += f"  other cpu {r.other_cpu:.2f}"
    errs = f"  errors {r.errors}" + (f" {dict(r.error_samples)}" if r.errors else "")
    return (f"[{backend}] {r.name:<34} {r.rate:9.1f}{unit}  p50 {r.pct(50):7.2f} ms  "
            f"p99 {r.pct(99):7.2f} ms{errs}{cpu}")


async def run_closed(backend: str, label: str, name: str, port: int, pid: int | None, o: Opts,
                     step: Step, concurrency: int | None = None) -> Result:
    prof = o.profiler.start(pid, f"{backend}-{label}", o.warmup + o.duration) if pid else None
    r = await closed_loop(name, port, concurrency or o.concurrency, o.warmup, o.duration, step,
                          meter(pid))
    o.profiler.finish(prof)
    print(line(backend, r), flush=True)
    return r


async def bench_bare(port: int, pid: int, o: Opts, label: str = "bare") -> Result:
    raw = build("GET", "/json", port)

    async def step(conn: HttpConn, _: int) -> tuple[bool, str]:
        status, body = await conn.request(raw)
        return status == 200, f"{status} {body[:80]!r}"

    return await run_closed(label, "json", "bare Starlette GET /json", port, pid, o, step)


async def bench_app(backend: str, port: int, pid: int, s: Seed, o: Opts) -> dict[str, Result]:
    results: dict[str, Result] = {}
    basic = base64.b64encode(f"{s.client_id}:{s.client_secret}".encode()).decode()
    token_headers = {"Authorization": f"Basic {basic}",
                     "Content-Type": "application/x-www-form-urlencoded"}

    def get(path: str, token: str) -> bytes:
        return build("GET", path, port, {"Authorization": f"Bearer {token}"})

    # --- read paths: contacts (100 buddies), /v1/me (auth only), /healthz (framework only)
    contacts_raw = get("/v1/contacts", s.contacts_user_token)
    check = HttpConn(port)
    status, body = await check.request(contacts_raw)
    check.close()
    n = len(json.loads(body).get("contacts", [])) if status == 200 else -1
    if n != 100:
        raise RuntimeError(f"GET /v1/contacts returned {status} with {n} contacts, not 100")

    def getter(raw: bytes) -> Step:
        async def step(conn: HttpConn, _: int) -> tuple[bool, str]:
            status, body = await conn.request(raw)
            return status == 200, f"{status} {body[:80]!r}"
        return step

    if o.wants("contacts"):
        results["contacts"] = await run_closed(backend, "contacts",
                                               "GET /v1/contacts (100 buddies)", port, pid, o,
                                               getter(contacts_raw))
    if o.wants("me"):
        results["me"] = await run_closed(backend, "me", "GET /v1/me (auth only)", port, pid, o,
                                         getter(get("/v1/me", s.contacts_user_token)))
    if o.wants("healthz"):
        results["healthz"] = await run_closed(backend, "healthz", "GET /healthz (no auth, no DB)",
                                              port, pid, o, getter(build("GET", "/healthz", port)))

    # --- refresh-token grants: each worker follows its own rotating chain
    chains = list(s.refresh_tokens)
    current = [chains.pop() for _ in range(o.concurrency)]

    async def refresh(conn: HttpConn, i: int) -> tuple[bool, str]:
        status, body = await conn.request(build(
            "POST", "/oauth/token", port, token_headers,
            form(grant_type="refresh_token", refresh_token=current[i])))
        if status == 200:
            current[i] = json.loads(body)["refresh_token"]
            return True, ""
        if chains:  # a broken chain (e.g. a lost answer): continue on a spare one
            current[i] = chains.pop()
        return False, f"{status} {body[:100]!r}"

    if o.wants("refresh"):
        results["refresh"] = await run_closed(backend, "refresh", "refresh-token grants", port,
                                              pid, o, refresh)

    # --- password grants
    def password_step() -> Step:
        async def step(conn: HttpConn, i: int) -> tuple[bool, str]:
            user = s.login_users[i % len(s.login_users)]
            status, body = await conn.request(build(
                "POST", "/oauth/token", port, token_headers,
                form(grant_type="password", username=user, password=PASSWORD)))
            return status == 200, f"{status} {body[:100]!r}"
        return step

    if o.wants("password"):
        results["password"] = await run_closed(backend, "password", "password grants", port, pid,
                                               o, password_step())

    # --- messages over the event stream
    if o.wants("messages"):
        results.update(await bench_messages(backend, port, pid, s, o))
    if not o.wants("saturation"):
        return results

    # --- other requests while password logins saturate the hashing threads
    me_raw = get("/v1/me", s.contacts_user_token)
    results["idle_probe"] = await probe(backend, "probe-idle",
                                        f"GET /v1/me p99 at {o.probe_rate:g}/s, idle", port,
                                        pid, o, me_raw)
    stop = asyncio.Event()
    flood = Result("password grants (flood)")
    t_flood = perf()

    async def flooder(i: int) -> None:
        conn = HttpConn(port)
        step = password_step()
        try:
            while not stop.is_set():
                try:
                    ok, why = await step(conn, i)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    conn.close()
                    ok, why = False, type(exc).__name__
                if ok:
                    flood.count += 1
                else:
                    flood.error(why)
        finally:
            conn.close()

    flooders = [asyncio.create_task(flooder(i)) for i in range(o.concurrency)]
    await asyncio.sleep(o.warmup)
    sat = await probe(backend, "probe-saturated",
                      f"GET /v1/me p99 at {o.probe_rate:g}/s, hashing saturated", port, pid, o,
                      me_raw, warm=False)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*flooders), 60)
    flood.seconds = perf() - t_flood
    sat.extra["password_rate"] = flood.rate
    sat.extra["password_errors"] = flood.errors
    print(f"[{backend}]   (password grants meanwhile: {flood.rate:.1f}/s, "
          f"errors {flood.errors})", flush=True)
    results["saturated_probe"] = sat
    return results


async def probe(backend: str, label: str, name: str, port: int, pid: int, o: Opts, raw: bytes,
                warm: bool = True) -> Result:
    """Paced requests; latency from the intended send time."""
    result = Result(name)
    pool = ConnPool(port, o.concurrency)
    if warm:
        await open_loop(o.probe_rate, o.warmup, lambda _: pool.request(raw))

    async def fire(intended: float) -> None:
        try:
            status, body = await pool.request(raw)
        except (OSError, asyncio.IncompleteReadError) as exc:
            result.error(type(exc).__name__)
            return
        if status == 200:
            result.count += 1
            result.latencies.append(perf() - intended)
        else:
            result.error(f"{status} {body[:80]!r}")

    cpu = meter(pid)
    prof = o.profiler.start(pid, f"{backend}-{label}", o.duration)
    cpu.start()
    n = await open_loop(o.probe_rate, o.duration, fire, grace=GRACE)
    record_cpu(cpu, result)
    o.profiler.finish(prof)
    result.seconds = o.duration
    pool.close()
    unanswered = n - result.count - result.errors
    result.extra["unanswered"] = unanswered
    # Requests still unanswered GRACE s after the phase count as infinitely slow.
    result.latencies += [math.inf] * unanswered
    print(line(backend, result) + (f"  ({unanswered} unanswered after {GRACE:g} s)"
                                   if unanswered else ""), flush=True)
    return result


async def bench_messages(backend: str, port: int, pid: int, s: Seed,
                         o: Opts) -> dict[str, Result]:
    """Max send rate (closed loop), then send→receive latency paced at half of it."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    arrived: dict[str, float] = {}
    state = {"last": 0, "reconnects": 0, "bad": 0}
    connected = asyncio.Event()
    done = asyncio.Event()

    async def receiver() -> None:
        while not done.is_set():
            query = f"?since={state['last']}" if state["last"] else ""
            try:
                async with connect(f"ws://{HOST}:{port}/v1/events{query}", proxy=None,
                                   additional_headers={
                                       "Authorization": f"Bearer {s.receiver_token}"},
                                   max_size=2**20, open_timeout=10) as ws:
                    connected.set()
                    async for frame in ws:
                        now = perf()
                        event = json.loads(frame)
                        if event.get("type") == "error":
                            raise RuntimeError(f"event stream refused: {event}")
                        if "seq" in event:
                            if event["seq"] != state["last"] + 1 and state["last"]:
                                state["bad"] += 1
                            state["last"] = event["seq"]
                        if event.get("type") == "message":
                            arrived.setdefault(event["client_msg_id"], now)
            except (ConnectionClosed, OSError):
                if done.is_set():
                    return
                state["reconnects"] += 1
                await asyncio.sleep(0.05)

    recv_task = asyncio.create_task(receiver())
    await asyncio.wait_for(connected.wait(), 15)
    await asyncio.sleep(0.2)  # let the stream finish its catch-up and start pumping
    headers = {"Authorization": f"Bearer {s.sender_token}", "Content-Type": "application/json"}
    run_id = secrets.token_hex(3)
    counter = iter(range(10**9))

    def message(tag: str) -> tuple[str, bytes]:
        cmid = f"{run_id}-{tag}-{next(counter)}"
        body = json.dumps({"to": "receiver", "body": f"hello {cmid}", "client_msg_id": cmid})
        return cmid, build("POST", "/v1/messages", port, headers, body.encode())

    sent: dict[str, float] = {}

    async def send_step(conn: HttpConn, _: int) -> tuple[bool, str]:
        cmid, raw = message("max")
        sent[cmid] = perf()
        status, body = await conn.request(raw)
        return status == 201, f"{status} {body[:100]!r}"

    out: dict[str, Result] = {}
    mx = await run_closed(backend, "msg-max", "message sends, max rate (closed loop)", port, pid,
                          o, send_step)
    await asyncio.sleep(0.5)
    lat = [arrived[c] - t for c, t in sent.items() if c in arrived]
    mx.extra["delivered"] = sum(1 for c in sent if c in arrived)
    mx.extra["sent"] = len(sent)
    mx.extra["e2e_p50"] = percentile(lat, 50) * 1000
    mx.extra["e2e_p99"] = percentile(lat, 99) * 1000
    print(f"[{backend}]   (at max rate: send→receive p50 {mx.extra['e2e_p50']:.1f} ms, "
          f"p99 {mx.extra['e2e_p99']:.1f} ms; {mx.extra['delivered']}/{len(sent)} delivered)",
          flush=True)
    out["msg_max"] = mx

    rate = max(1.0, mx.rate / 2)
    paced = Result(f"message send→receive at {rate:.0f}/s")
    intended: dict[str, float] = {}
    acked: list[float] = []
    pool = ConnPool(port, o.concurrency)

    async def fire(t: float) -> None:
        cmid, raw = message("paced")
        intended[cmid] = t
        try:
            status, body = await pool.request(raw)
        except (OSError, asyncio.IncompleteReadError) as exc:
            paced.error(type(exc).__name__)
            return
        if status == 201:
            acked.append(perf() - t)
        else:
            paced.error(f"{status} {body[:100]!r}")

    cpu = meter(pid)
    prof = o.profiler.start(pid, f"{backend}-msg-paced", o.duration)
    cpu.start()
    n = await open_loop(rate, o.duration, fire)
    record_cpu(cpu, paced)
    o.profiler.finish(prof)
    pool.close()
    deadline = perf() + 3
    while perf() < deadline and any(c not in arrived for c in intended):
        await asyncio.sleep(0.02)
    done.set()
    recv_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await recv_task
    paced.latencies = [arrived[c] - t for c, t in intended.items() if c in arrived]
    paced.count = len(paced.latencies)
    paced.seconds = o.duration
    lost = n - paced.count
    paced.latencies += [math.inf] * lost  # never delivered: infinitely late
    paced.extra.update(rate=rate, sent=n, lost=lost, ack_p50=percentile(acked, 50) * 1000,
                       ack_p99=percentile(acked, 99) * 1000, reconnects=state["reconnects"],
                       seq_gaps=state["bad"])
    print(line(backend, paced) + f"  (201 p99 {paced.extra['ack_p99']:.1f} ms, lost {lost}, "
          f"stream reconnects {state['reconnects']})", flush=True)
    out["msg_paced"] = paced
    return out


# --------------------------------------------------------------------------- orchestration

async def run_backend(backend: str, db_url: str, home: Path, o: Opts,
                      logs: Path) -> dict[str, Result]:
    t = perf()
    s = await seed(db_url, buddies=100, chains=o.concurrency * 8, login_users=o.concurrency)
    print(f"[{backend}] seeded accounts, client, 100 buddies and token chains "
          f"in {perf() - t:.1f} s", flush=True)
    env = clean_env(INTERAPP_HOME=str(home), **o.server_env)
    server = Server(f"interapp serve ({backend})",
                    [*o.interapp_cmd, "serve", "--app", APP, "--db", db_url, "--host",
                     HOST, "--port", "0"], env, logs / f"serve-{backend}.log",
                    r"serving \S+ on http://[\d.]+:(\d+)", o.server_cpus)
    try:
        await server.wait_ready("/healthz")
        print(f"[{backend}] interapp serve pid {server.pid} on port {server.port}", flush=True)
        return await bench_app(backend, server.port, server.pid, s, o)
    finally:
        server.stop()


async def run_bare(o: Opts, logs: Path, cpus: set[int] | None = None,
                   label: str = "bare") -> Result:
    server = Server("bare Starlette", [sys.executable, str(ROOT / "bench" / "bare_server.py")],
                    {**os.environ, **o.server_env}, logs / f"{label}.log",
                    r"serving on http://[\d.]+:(\d+)", cpus)
    try:
        await server.wait_ready("/json")
        print(f"[{label}] uvicorn pid {server.pid} on port {server.port}"
              + (f", pinned to CPU {sorted(cpus)}" if cpus else ""), flush=True)
        return await bench_bare(server.port, server.pid, o, label)
    finally:
        server.stop()


async def run_bare_pinned(o: Opts, logs: Path) -> Result | None:
    """The yardstick again with the server alone on CPU 0 and this process on the last CPU.

    On a small machine the scheduler tends to put a loopback client and server on the same
    core; this variant shows what the bare endpoint does with a core of its own.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[-1]})
    try:
        return await run_bare(o, logs, set(cpus[:-1]), "bare-pinned")
    finally:
        os.sched_setaffinity(0, before)


async def main_async(args: argparse.Namespace) -> int:
    o = Opts(warmup=args.warmup, duration=args.duration, concurrency=args.concurrency,
             probe_rate=args.probe_rate, profiler=Profiler(args.profile),
             server_env=dict(kv.split("=", 1) for kv in args.server_env),
             only=set(args.only.split(",")) if args.only else None,
             interapp_cmd=shlex.split(args.interapp_cmd) if args.interapp_cmd
             else [str(BIN / "interapp")])
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) >= 2:
        o.server_cpus, o.client_cpus = set(cpus[:-1]), {cpus[-1]}
        os.sched_setaffinity(0, o.client_cpus)
    backends = []
    if args.backend in ("auto", "sqlite", "both"):
        backends.append("sqlite")
    if args.backend in ("postgres", "both") or (args.backend == "auto"
                                                and pg_available(args.pg_url)):
        backends.append("postgres")
    print(f"server benchmark: one worker, {o.concurrency} connections, phases of "
          f"{o.warmup:g}+{o.duration:g} s, back-ends: {', '.join(backends)}"
          + (f"; servers pinned to CPU {sorted(o.server_cpus)}, load generator to CPU "
             f"{sorted(o.client_cpus)}" if o.server_cpus and o.client_cpus else "")
          + (f"; server env {o.server_env}" if o.server_env else ""), flush=True)
    work = Path(tempfile.mkdtemp(prefix="interapp-bench-"))
    all_results: dict[str, dict[str, Result]] = {}
    started = dt.datetime.now(dt.UTC)
    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    calibration = cpu_scaling() if o.only is None else None
    if calibration:
        print(f"[machine] two CPU-bound processes run at {calibration:.2f}x one "
              "(2.00 = two independent cores)", flush=True)
    try:
        bare = await run_bare(o, work, o.server_cpus) if o.wants("bare") else Result("none")
        bare_pinned = (await run_bare_pinned(o, work)
                       if not o.server_cpus and o.wants("bare") else None)
        for backend in backends:
            home = work / f"home-{backend}"
            home.mkdir()
            if backend == "sqlite":
                url = f"sqlite:///{home / 'bench.db'}"
                all_results[backend] = await run_backend(backend, url, home, o, work)
            else:
                name, url = pg_create(args.pg_url)
                try:
                    all_results[backend] = await run_backend(backend, url, home, o, work)
                finally:
                    pg_drop(args.pg_url, name)
    except Exception:
        print(f"(server logs kept in {work})", file=sys.stderr)
        raise
    shutil.rmtree(work, ignore_errors=True)
    if o.only is not None:
        return 0
    yard = Yardstick(bare, bare_pinned)
    report = render(yard, all_results, args, started, o, calibration)
    print()
    print(summary_lines(yard, all_results))
    if args.out:
        write_block("server-bench", report, Path(args.out))
        print(f"wrote {args.out}")
    return 0


# --------------------------------------------------------------------------- report

@dataclass
class Row:
    metric: str
    measured: str
    yardstick: str
    target: str
    met: str
    key: str = ""  # set on the rows that carry a target


def _ms(v: float) -> str:
    return f"> {GRACE:g} s (unanswered)" if math.isinf(v) else f"{v:.1f} ms"


@dataclass
class Yardstick:
    """The bare endpoint, measured unpinned and (when possible) pinned; the higher one counts."""

    unpinned: Result
    pinned: Result | None

    @property
    def best(self) -> Result:
        if self.pinned is not None and self.pinned.rate > self.unpinned.rate:
            return self.pinned
        return self.unpinned

    @property
    def rate(self) -> float:
        return self.best.rate


def rows_for(yard: Yardstick, r: dict[str, Result]) -> tuple[list[Row], list[str]]:
    """Table rows and plain statements of the misses."""
    rows, misses = [], []
    bare = yard.rate

    def ratio(x: Result) -> str:
        return f"{x.rate / bare:.3f}x" if bare else "-"

    ref = r["refresh"]
    ok = ref.rate >= TARGET_REFRESH and not ref.errors
    rows.append(Row("refresh-token grants/s", f"**{ref.rate:,.0f}/s** (p50 {_ms(ref.pct(50))}, "
                    f"p99 {_ms(ref.pct(99))}{f', {ref.errors} errors' if ref.errors else ''})",
                    ratio(ref), f"≥ {TARGET_REFRESH:,.0f}/s", met(ok),
                    "refresh-token grants ≥ 1,500/s"))
    if not ok:
        misses.append(f"refresh-token grants: {ref.rate:,.0f}/s against ≥ {TARGET_REFRESH:,.0f}/s"
                      f" — {TARGET_REFRESH / max(ref.rate, 1e-9):.1f}x too slow "
                      f"({(1 - ref.rate / TARGET_REFRESH) * 100:.0f} % short)")
    pw = r["password"]
    rows.append(Row("password grants/s", f"{pw.rate:,.1f}/s (p50 {_ms(pw.pct(50))}, p99 "
                    f"{_ms(pw.pct(99))})", ratio(pw), "— (argon2id-bound)", "—"))
    con = r["contacts"]
    cr = con.rate / bare if bare else 0.0
    ok = cr >= TARGET_CONTACTS_RATIO and not con.errors
    rows.append(Row("GET /v1/contacts (100 buddies)", f"{con.rate:,.0f}/s (p50 "
                    f"{_ms(con.pct(50))}, p99 {_ms(con.pct(99))})", f"**{cr:.3f}x**",
                    f"≥ {TARGET_CONTACTS_RATIO}x bare", met(ok),
                    f"GET /v1/contacts (100 buddies) ≥ {TARGET_CONTACTS_RATIO}x the bare endpoint"))
    if not ok:
        misses.append(f"GET /v1/contacts: {cr:.3f}x the bare endpoint against ≥ "
                      f"{TARGET_CONTACTS_RATIO}x — {TARGET_CONTACTS_RATIO / max(cr, 1e-9):.1f}x "
                      f"too slow ({con.rate:,.0f}/s where {TARGET_CONTACTS_RATIO * bare:,.0f}/s "
                      "are needed)")
    for key, label in (("me", "GET /v1/me (auth only; diagnostic)"),
                       ("healthz", "GET /healthz (FastAPI, no auth, no DB; diagnostic)")):
        x = r[key]
        rows.append(Row(label, f"{x.rate:,.0f}/s (p50 {_ms(x.pct(50))}, p99 {_ms(x.pct(99))})",
                        ratio(x), "—", "—"))
    mx = r["msg_max"]
    rows.append(Row("message sends, max rate (closed loop)", f"{mx.rate:,.0f}/s (send→receive "
                    f"p50 {_ms(mx.extra['e2e_p50'])}, p99 {_ms(mx.extra['e2e_p99'])})",
                    ratio(mx), "—", "—"))
    mp = r["msg_paced"]
    ok = mp.pct(99) <= TARGET_MSG_P99_MS and not mp.extra["lost"] and not mp.errors
    lost = f", {mp.extra['lost']} lost" if mp.extra["lost"] else ""
    rows.append(Row(f"message send→receive, paced at half the max ({mp.extra['rate']:.0f}/s)",
                    f"p50 {_ms(mp.pct(50))}, **p99 {_ms(mp.pct(99))}**{lost} (POST answered: "
                    f"p99 {_ms(mp.extra['ack_p99'])})", "—",
                    f"p99 ≤ {TARGET_MSG_P99_MS:g} ms", met(ok),
                    f"message send→receive p99 ≤ {TARGET_MSG_P99_MS:g} ms at half the max rate"))
    if not ok:
        misses.append(f"message send→receive p99 at half the max rate: {_ms(mp.pct(99))} "
                      f"against ≤ {TARGET_MSG_P99_MS:g} ms — "
                      f"{mp.pct(99) / TARGET_MSG_P99_MS:.2f}x the limit{lost}")
    ip, sp = r["idle_probe"], r["saturated_probe"]
    rows.append(Row(f"GET /v1/me paced at {ip.rate:.0f}/s, no login load (baseline)",
                    f"p50 {_ms(ip.pct(50))}, p99 {_ms(ip.pct(99))}", "—", "—", "—"))
    ok = sp.pct(99) <= TARGET_SATURATED_P99_MS and not sp.errors
    rows.append(Row(f"GET /v1/me paced at {sp.rate:.0f}/s while password logins saturate the "
                    f"hashing threads ({sp.extra['password_rate']:.0f} logins/s meanwhile)",
                    f"p50 {_ms(sp.pct(50))}, **p99 {_ms(sp.pct(99))}**", "—",
                    f"p99 ≤ {TARGET_SATURATED_P99_MS:g} ms", met(ok),
                    f"other requests p99 ≤ {TARGET_SATURATED_P99_MS:g} ms while password logins "
                    "saturate hashing"))
    if not ok:
        misses.append(f"other requests while password logins saturate hashing: p99 "
                      f"{_ms(sp.pct(99))} against ≤ {TARGET_SATURATED_P99_MS:g} ms — "
                      f"{sp.pct(99) / TARGET_SATURATED_P99_MS:.1f}x the limit")
    return rows, misses


def summary_lines(yard: Yardstick, results: dict[str, dict[str, Result]]) -> str:
    out = [f"bare Starlette GET /json: {yard.unpinned.rate:,.0f}/s"]
    if yard.pinned:
        out.append(f"bare Starlette GET /json, pinned (server CPU 0, load generator CPU 1): "
                   f"{yard.pinned.rate:,.0f}/s")
    out.append(f"yardstick (the higher): {yard.rate:,.0f}/s")
    for backend, r in results.items():
        rows, misses = rows_for(yard, r)
        out.append(f"{backend}:")
        out += [f"  {row.metric}: {row.measured} | {row.yardstick} | {row.target} | "
                f"{row.met}".replace("**", "") for row in rows]
        out += [f"  MISS {m}" for m in misses]
    return "\n".join(out)


def wait_quiet(limit: float, quiet_for: int = 5) -> None:
    """Wait (at most ``limit`` s) until other processes use under NOISY_CPU cores for a while."""
    cpu_probe = meter(None)
    deadline = time.monotonic() + limit
    calm = 0
    last_note = 0.0
    while True:
        cpu_probe.start()
        time.sleep(1.0)
        busy = cpu_probe.stop()["other"]
        calm = calm + 1 if busy < NOISY_CPU else 0
        if calm >= quiet_for or time.monotonic() > deadline:
            print(f"[machine] other processes use {busy:.2f} CPU"
                  + ("" if calm >= quiet_for else " (still busy; going on)"), flush=True)
            return
        if time.monotonic() - last_note > 30:
            last_note = time.monotonic()
            print(f"[machine] other processes use {busy:.2f} CPU; waiting for {quiet_for} quiet "
                  "seconds", flush=True)


def cpu_scaling(seconds: float = 1.0) -> float | None:
    """How much two CPU-bound processes get done together, relative to one alone."""
    code = (f"import time\nt=time.perf_counter()+{seconds}\nn=0\n"
            "while time.perf_counter()<t: n+=1\nprint(n)")

    def run(k: int) -> int:
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
                 for _ in range(k)]
        return sum(int(p.communicate()[0]) for p in procs)

    try:
        solo = run(1)
        return run(2) / solo if solo else None
    except (OSError, ValueError):
        return None


def render(yard: Yardstick, results: dict[str, dict[str, Result]], args: argparse.Namespace,
           started: dt.datetime, o: Opts, calibration: float | None) -> str:
    cmd = ".venv/bin/python bench/server_bench.py " + " ".join(args.argv)
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    up, pn = yard.unpinned, yard.pinned
    md = [
        "## One application-server worker (issue 2)",
        "",
        "Generated by `bench/server_bench.py` (the benchmark of issue 2; a benchmark, not a timed "
        "test). Re-run with:",
        "",
        "```sh",
        cmd.strip(),
        "```",
        "",
        "### Machine and method",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC.",
        f"- Machine: nproc = {nproc}, {cpu_model()}, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**30} GiB RAM, "
        f"{platform.system()} {platform.release()}; load average at the start "
        f"{os.getloadavg()[0]:.2f}."
        + (f" Two CPU-bound processes together ran at {calibration:.2f}x one alone (2.00 = two "
           "independent cores)" + (
               "." if calibration >= 1.8 else
               ": other processes were using the machine, so every figure is pessimistic.")
           if calibration else ""),
        f"- Python {platform.python_version()} ({platform.python_implementation()}); "
        f"{versions(PACKAGES)}.",
        "- Server: one `interapp serve --port 0` process (uvicorn, uvloop + httptools, one "
        "worker) on 127.0.0.1, its data in a fresh temporary `INTERAPP_HOME` (SQLite) or a fresh "
        "PostgreSQL database. Accounts, the OAuth client, 100 buddies and the token chains are "
        "seeded through `interapp.server.accounts` / `social` / `oauth.issue` before it starts.",
        f"- Load generator: this separate process, a raw asyncio HTTP/1.1 keep-alive client on "
        f"uvloop ({o.concurrency} connections for the closed-loop phases); the event stream is "
        "read with the `websockets` library. Each refresh worker follows its own rotating chain "
        "(it always presents the refresh token it got last).",
        f"- Each phase: {o.warmup:g} s warm-up, then {o.duration:g} s measured. Paced phases are "
        "open-loop and their latencies are counted from the *intended* send time (no "
        "coordinated omission). Message latency is POST `/v1/messages` sent → the `message` "
        "event read on the receiver's `/v1/events` WebSocket; first the max send rate is "
        "measured (closed loop), then messages are paced at half of it. The saturation phase "
        f"floods password grants on {o.concurrency} connections and meanwhile paces "
        f"`GET /v1/me` at {o.probe_rate:g}/s.",
        f"- Yardstick: a bare Starlette `JSONResponse({{\"status\": \"ok\"}})` endpoint "
        f"(`bench/bare_server.py`) on uvicorn in a subprocess started like `interapp serve` "
        f"(same socket set-up, same uvicorn settings), in the same run: {up.rate:,.0f} req/s "
        f"unpinned (CPU: server {up.server_cpu or 0:.2f}, load generator "
        f"{up.client_cpu or 0:.2f}, other processes {up.other_cpu or 0:.2f})"
        + (f", {pn.rate:,.0f} req/s with the server pinned to CPU 0 and the load generator to "
           f"CPU 1 (CPU: server {pn.server_cpu or 0:.2f}, other processes "
           f"{pn.other_cpu or 0:.2f})" if pn else "")
        + f". **Ratios use the higher figure, {yard.rate:,.0f} req/s.** (While other processes "
        "load this machine the bare figure drops to 6,000-9,000 req/s and the server's to "
        "a half or less; compare figures from one run, and check the CPU tables below.)",
    ]
    if o.server_cpus:
        md.append(f"- `--pin`: every server process ran on CPU {sorted(o.server_cpus)} and the "
                  f"load generator on CPU {sorted(o.client_cpus or set())}.")
    if o.server_env:
        md.append(f"- Extra server environment (experiment): `{o.server_env}`.")
    md += ["", "### Targets at a glance", "",
           "| Target (issue 2, one worker) | " + " | ".join(results) + " |",
           "|---|" + "---|" * len(results)]
    glance: dict[str, list[str]] = {}
    for r in results.values():
        rows, _ = rows_for(yard, r)
        for row in rows:
            if row.key:
                shown = row.yardstick if row.key.startswith("GET /v1/contacts") else (
                    row.measured.split(" (")[0])
                glance.setdefault(row.key, []).append(f"{shown} — {row.met}")
    md += [f"| {k} | " + " | ".join(v) + " |" for k, v in glance.items()]
    md.append("")
    for backend, r in results.items():
        rows, misses = rows_for(yard, r)
        label = {"sqlite": "SQLite (the embedded default)",
                 "postgres": "PostgreSQL on 127.0.0.1:5432 (fresh database)"}.get(backend, backend)
        md += [f"### {label}", "",
               "| Metric | Measured | Ratio to bare | Target | Status |",
               "|---|---|---|---|---|"]
        md += [f"| {x.metric} | {x.measured} | {x.yardstick} | {x.target} | {x.met} |"
               for x in rows]
        md += ["", "<details><summary>CPU during each phase (cores; 1.00 = one CPU busy)"
               "</summary>", "",
               "| Phase | Server process | Load generator | Every other process"
               + (" (PostgreSQL included)" if backend == "postgres" else "") + " |",
               "|---|---|---|---|"]
        md += [f"| {res.name} | {res.server_cpu or 0:.2f} | {res.client_cpu or 0:.2f} | "
               f"{res.other_cpu or 0:.2f} |" for res in r.values()
               if res.server_cpu is not None]
        md += ["", "</details>", ""]
        noisy = [res.name for res in r.values()
                 if res.other_cpu is not None and res.other_cpu > NOISY_CPU
                 and backend != "postgres"]
        if noisy:
            md += [f"Other processes on the machine used more than {NOISY_CPU} of a CPU during: "
                   + "; ".join(noisy) + ". Those figures are pessimistic.", ""]
        errors = {name: res.errors for name, res in r.items() if res.errors}
        if errors:
            md += [f"Errors during phases: {errors}.", ""]
        if misses:
            md += [f"**Not met yet on {backend}:**", ""] + [f"- {m}" for m in misses] + [""]
        else:
            md += [f"All targets are met on {backend}.", ""]
    return "\n".join(md)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark one interapp application-server worker.")
    p.add_argument("--quick", action="store_true", help="2 s phases (smoke run)")
    p.add_argument("--out", help="write the Markdown report here (e.g. docs/performance.md)")
    p.add_argument("--backend", choices=["auto", "sqlite", "postgres", "both"], default="auto",
                   help="auto = SQLite, plus PostgreSQL when it answers (default)")
    p.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432",
                   help="PostgreSQL server (a fresh database is created and dropped)")
    p.add_argument("--concurrency", type=int, default=16, help="connections per phase")
    p.add_argument("--duration", type=float, help="measured seconds per phase (8; quick 2)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per phase (1; quick 0.3)")
    p.add_argument("--probe-rate", type=float, default=100.0,
                   help="paced GET /v1/me rate of the saturation phase (req/s)")
    p.add_argument("--profile", type=Path, help="record py-spy raw stacks per phase here")
    p.add_argument("--pin", action="store_true",
                   help="pin servers to all CPUs but the last, the load generator to the last")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="first wait up to SECONDS for other processes to go quiet")
    p.add_argument("--only", help=f"comma-separated phases (experiments; no report): "
                   f"{','.join(PHASES)}")
    p.add_argument("--interapp-cmd", help="command used instead of .venv/bin/interapp to run "
                   "'serve' (experiments, e.g. a launcher that patches the server)")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the server processes (experiments)")
    args = p.parse_args(argv)
    args.argv = argv
    if args.only and (set(args.only.split(",")) - set(PHASES)):
        p.error(f"--only takes phases among {','.join(PHASES)}")
    if args.only and args.out:
        p.error("--only runs experiments; it does not write a report")
    if args.duration is None:
        args.duration = 2.0 if args.quick else 8.0
    if args.warmup is None:
        args.warmup = 0.3 if args.quick else 1.0
    args.duration = min(args.duration, 10.0)
    args.concurrency = max(1, min(args.concurrency, 64))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(ROOT / "src"))
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
