"""Issue-6 benchmark of live events: fan-out, scale-out over processes, and stream memory.

    .venv/bin/python bench/compare_streams.py [--quick] [--streams 10000] [--write | --no-write]

From this separate load-generator process, in one run:

* **yardstick** — the bare Starlette JSON endpoint (``bench/bare_server.py``): req/s and idle RSS;
* **idle memory** — RSS of a fresh ``interapp serve`` (SQLite) after ``/readyz`` and a few
  requests, and of a 2-worker PostgreSQL + Redis server (whole process tree);
* **streams in one process** — N authenticated ``/v1/events`` WebSockets (1,000, then
  ``--streams``) held by a few hundred accounts on one SQLite server: RSS and bytes per stream,
  a presence change that must reach every stream, the idle CPU while holding them; then 1,000
  streams that negotiate ``permessage-deflate`` (as browsers do) on a fresh server;
* **fan-out** — one sender whose buddies each hold a stream (1,000; ``--quick``: 200) changes
  presence in bursts: delivery latency to every stream and events delivered/s, with 1 server
  process and with 2 (``--workers 2``), on PostgreSQL + Redis;
* **scale-out** — ``POST /v1/messages`` closed loop over 20 buddy pairs, each message received
  on the receiver's stream, with 1 and 2 worker processes, against the ≥ 1.7x target.

In the 2-process runs streams and connections are spread evenly over the workers (checked
through ``/proc``). Results: the ``compare-streams`` block of ``docs/performance.md``, charts
in ``docs/perf/`` and the raw figures in ``docs/perf/compare-streams.json``. Everything
started is stopped at the end, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit import (
    CHARTS,
    CpuMeter,
    Proc,
    cpu_scaling,
    cpu_text,
    descendants,
    machine_line,
    parse,
    parser,
    percentile,
    pg_available,
    pg_database,
    progress,
    rss_bytes,
    run_loop,
    say,
    seeding,
    serve,
    serve_bare,
    tree_rss_bytes,
    write_block,
)
from loadkit import (
    Arrivals,
    HttpConn,
    WsStream,
    bearer,
    build,
    closed_loop,
    getter,
    open_streams,
    request_once,
)
from rich.progress import Progress
from streamreport import draw_charts, render_block

perf = time.perf_counter
MB, KB = 1024 * 1024, 1024
HOLDERS = 200  # accounts sharing the streams of the one-process phase
ACTIVE = re.compile(r"^interapp_active_streams(?:\{[^}]*\})?\s+(\S+)$", re.M)


def raise_nofile(want: int) -> int:
    """Raise this process's open-file limit (inherited by the servers it starts); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, want)
    with contextlib.suppress(ValueError, OSError):  # raising the hard limit needs root
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
        return target
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def peer_owner(port: int, pids: list[int]) -> dict[int, int]:
    """For each established connection to ``port``: the client's port → the server pid
    (from the sockets in ``/proc/PID/fd`` and ``/proc/net/tcp``)."""
    owner = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        owner[int(target[8:-1])] = pid
    out: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
                if state == "01" and int(local.rsplit(":", 1)[1], 16) == port and inode in owner:
                    out[int(remote.rsplit(":", 1)[1], 16)] = owner[inode]
    return out


def worker_pids(pid: int) -> list[int]:
    """The processes that serve requests: the workers of a supervisor, else ``pid`` itself."""
    def is_worker(p: int) -> bool:
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
            return b"python" in cmd and b"resource_tracker" not in cmd
        return False

    return [p for p in descendants(pid) if is_worker(p)] or [pid]


@contextlib.contextmanager
def private_redis(fallback: str) -> Iterator[tuple[str, str]]:
    """A throw-away ``redis-server`` on a free port (no persistence), or ``fallback`` when
    none is installed; yields ``(url, description)``."""
    exe = shutil.which("redis-server")
    if exe is None:
        yield fallback, f"the shared Redis at {fallback}"
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", port), 0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.05)
        yield (f"redis://127.0.0.1:{port}/0",
               f"a private redis-server on port {port} (no persistence)")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Accounts:
    """Seeded accounts and their access tokens."""

    hub_token: str
    member_tokens: list[str]  # buddies of the hub: m00000, m00001, …
    pairs: list[tuple[str, str, str, str]]  # (sender, sender token, receiver, receiver token)


async def seed_accounts(db_url: str, *, members: int, pairs: int) -> Accounts:
    """``hub`` with ``members`` buddies, and ``pairs`` sender/receiver buddy pairs, each with a
    4-hour access token (straight into the database; nobody logs in)."""
    async with seeding(db_url) as sd:
        cid, _ = await sd.client("compare-streams", public=True)

        async def token(user: Any) -> str:
            return str((await sd.tokens(user.id, cid))["access_token"])

        hub = await sd.user("hub")
        member_tokens = []
        for i in range(members):
            member = await sd.user(f"m{i:05d}")
            await sd.buddies(hub, member)
            member_tokens.append(await token(member))
        pair_rows = []
        for i in range(pairs):
            a, b = await sd.user(f"ps{i:02d}"), await sd.user(f"pr{i:02d}")
            await sd.buddies(a, b)
            pair_rows.append((a.username, await token(a), b.username, await token(b)))
        hub_token = await token(hub)
    return Accounts(hub_token, member_tokens, pair_rows)


@dataclass
class Plan:
    """Sizes of one run (``--quick`` shrinks them)."""

    quick: bool
    streams: int
    fanout: int
    bursts: int
    pairs: int
    duration: float
    warmup: float
    hold: float
    deflate: int


class Bench:
    """Runs the phases and collects results into ``self.out``."""

    def __init__(self, plan: Plan, bar: Progress, task: Any, redis_url: str) -> None:
        self.plan, self.bar, self.task, self.redis_url = plan, bar, task, redis_url
        self.work = Path(tempfile.mkdtemp(prefix="interapp-streams-"))
        self.servers: list[Proc] = []
        self.streams: list[WsStream] = []
        self.out: dict[str, Any] = {"errors": {}}

    def step(self, text: str) -> None:
        """Advance the overall bar and name the next step."""
        self.bar.update(self.task, advance=1, description=text)

    async def serve(self, tag: str, db_url: str, *, workers: int = 1,
                    redis: bool = False) -> Proc:
        """``interapp serve`` on ``db_url``, ready on ``/readyz``; stopped by :meth:`stop`."""
        args = (["--redis", self.redis_url] if redis else []) + \
            (["--workers", str(workers)] if workers > 1 else [])
        server = await asyncio.to_thread(serve, "streams", db_url, self.work,
                                         tag=f"interapp-{tag}", args=args, wait=False)
        self.servers.append(server)
        await server.wait_ready("/readyz")
        return server

    def stop(self, server: Proc) -> None:
        """Stop a server and anything it left behind."""
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def close_streams(self) -> None:
        """Close every open stream."""
        for stream in self.streams:
            stream.close()
        self.streams.clear()

    def cleanup(self) -> None:
        """Stop everything; keep the logs when a phase failed."""
        self.close_streams()
        for server in list(self.servers):
            with contextlib.suppress(Exception):
                self.stop(server)
        if self.out["errors"]:
            say(f"server logs kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    async def guarded(self, phase: str, work: Any) -> None:
        """Run one phase; on an error record it, stop what it started and go on."""
        try:
            await work
        except Exception as exc:
            self.out["errors"][phase] = f"{type(exc).__name__}: {str(exc)[:300]}"
            say(f"[red]{phase} FAILED: {self.out['errors'][phase]}")
            self.close_streams()
            for server in list(self.servers):
                with contextlib.suppress(Exception):
                    self.stop(server)

    async def warm(self, port: int, acc: Accounts, rounds: int) -> None:
        """``/readyz`` and a handful of API requests, each on a fresh connection."""
        hub, member = bearer(acc.hub_token, json_body=True), bearer(acc.member_tokens[0])
        for i in range(rounds):
            for raw in (build("GET", "/readyz", port), build("GET", "/healthz", port),
                        build("GET", "/v1/me", port, member),
                        build("GET", "/v1/contacts?limit=20", port, hub),
                        build("PUT", "/v1/presence", port, hub,
                              json.dumps({"state": "online", "status_text": "warm"}).encode()),
                        build("POST", "/v1/messages", port, hub, json.dumps(
                            {"to": "m00000", "body": "hi", "client_msg_id": f"warm{i}"}
                        ).encode()), build("GET", "/metrics", port)):
                status, body = await request_once(port, raw)
                if status not in (200, 201):
                    raise RuntimeError(f"warm-up request answered {status}: {body[:200]!r}")

    async def presence(self, port: int, acc: Accounts, tag: str, state: str = "online") -> float:
        """``PUT /v1/presence`` by the hub with ``tag`` as status text; seconds to the answer."""
        body = json.dumps({"state": state, "status_text": tag}).encode()
        t0 = perf()
        status, answer = await request_once(port, build(
            "PUT", "/v1/presence", port, bearer(acc.hub_token, json_body=True), body))
        if status != 200:
            raise RuntimeError(f"PUT /v1/presence answered {status}: {answer[:200]!r}")
        return perf() - t0

    async def reach_all(self, port: int, acc: Accounts, arrivals: Arrivals, timeout: float
                        ) -> dict[str, Any]:
        """Send one presence change and check that every open stream receives it."""
        tag = f"check-{secrets.token_hex(4)}"
        expected = sum(1 for s in self.streams if s.alive)
        waiter = arrivals.expect(tag, expected)
        t0 = perf()
        await self.presence(port, acc, tag)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, timeout)
        got = arrivals.forget(tag)
        lat = [t - t0 for t in got]
        closed = Counter(s.close_reason or "?" for s in self.streams if not s.alive)
        return {"streams": len(self.streams), "alive": expected, "received": len(got),
                "p50_ms": percentile(lat, 50) * 1000 if lat else math.nan,
                "max_ms": max(lat) * 1000 if lat else math.nan,
                "closed": dict(closed.most_common(5))}

    async def wait_subscribed(self, port: int, expected: int, timeout: float) -> float | None:
        """Wait until ``/metrics`` counts ``expected`` subscribed streams; seconds waited.

        A client sees the 101 before the server has authenticated the stream and subscribed it
        to the hub, so "opened" is not "listening". None when the gauge never got there.
        """
        t0 = perf()
        conn = HttpConn(port)
        try:
            while perf() - t0 < timeout:
                status, body = await conn.request(build("GET", "/metrics", port))
                found = ACTIVE.findall(body.decode(errors="replace")) if status == 200 else []
                if found and sum(float(x) for x in found) >= expected:
                    return perf() - t0
                if status == 200 and not found:
                    await asyncio.sleep(2.0)  # no such gauge: give the server a moment
                    return None
                await asyncio.sleep(0.2)
        finally:
            conn.close()
        return None

    async def baseline(self, server: Proc, acc: Accounts, arrivals: Arrivals,
                       deflate: bool = False) -> int:
        """Warm the stream code path with 20 streams, close them; the server's RSS then."""
        await open_streams(server.port, acc.member_tokens, 20, arrivals.on_event,
                           into=self.streams, deflate=deflate)
        await self.wait_subscribed(server.port, 20, 30)
        await self.reach_all(server.port, acc, arrivals, 10)
        self.close_streams()
        await asyncio.sleep(1.0)
        return rss_bytes(server.pid)

    async def yardstick(self) -> None:
        """The bare Starlette endpoint: req/s and idle RSS."""
        self.step("yardstick: bare Starlette")
        server = await asyncio.to_thread(serve_bare, self.work)
        self.servers.append(server)
        try:
            raw = build("GET", "/json", server.port)
            for _ in range(20):
                await request_once(server.port, raw)
            await asyncio.sleep(1)
            idle = rss_bytes(server.pid)
            r = await closed_loop("bare", server.port, 16, self.plan.warmup, self.plan.duration,
                                  getter(raw), CpuMeter({"server": server.pid}))
            self.out["yardstick"] = {"rate": r.rate, "p50_ms": r.pct(50), "p99_ms": r.pct(99),
                                     "errors": r.errors, "idle_rss": idle,
                                     "cpu": r.extra["cpu"]}
            say(f"  bare Starlette: {r.rate:,.0f} req/s, idle RSS {idle / MB:.1f} MB")
        finally:
            self.stop(server)

    async def streams_phase(self) -> None:
        """Idle memory (one process, SQLite) and N streams in that one process."""
        self.step("one process, SQLite: seeding")
        home = self.work / "sqlite"
        home.mkdir()
        url = f"sqlite:///{home / 'streams.db'}"
        acc = await seed_accounts(url, members=HOLDERS, pairs=0)
        tokens = acc.member_tokens
        self.step("one process, SQLite: idle memory")
        server = await self.serve("sqlite", url)
        res: dict[str, Any] = {"holders": HOLDERS, "steps": []}
        self.out["streams"] = res
        try:
            await self.warm(server.port, acc, 3)
            await asyncio.sleep(1.0)
            self.out["idle_sqlite"] = {"rss": rss_bytes(server.pid)}
            say(f"  idle interapp serve (SQLite, 1 process): {rss_bytes(server.pid) / MB:.1f} MB")
            arrivals = Arrivals()
            base = await self.baseline(server, acc, arrivals)
            res["base_rss"] = base
            targets = sorted({min(1000, self.plan.streams), self.plan.streams})
            sub = self.bar.add_task("  opening streams", total=targets[-1])
            for n in targets:
                self.step(f"one process: {n:,} streams")
                t0 = perf()
                cpu = CpuMeter({"server": server.pid})
                cpu.start()
                report = await open_streams(
                    server.port, tokens, n - len(self.streams), arrivals.on_event,
                    into=self.streams, start_index=len(self.streams),
                    tick=lambda k: self.bar.update(sub, advance=k))
                waited = await self.wait_subscribed(server.port, len(self.streams), 60 + n / 100)
                opening_cpu = cpu.stop()
                ready = perf() - t0
                await asyncio.sleep(2.0)
                rss = rss_bytes(server.pid)
                check = await self.reach_all(server.port, acc, arrivals, 30 + n / 500)
                step = {"target": n, "open": len(self.streams), "seconds": perf() - t0,
                        "open_rate": report.opened / ready, "subscribed": waited is not None,
                        "handshake_rate": report.rate, "failures": dict(report.failures),
                        "rss": rss, "per_stream": (rss - base) / max(1, len(self.streams)),
                        "fds": len(os.listdir(f"/proc/{server.pid}/fd")),
                        "opening_cpu": opening_cpu, "check": check}
                res["steps"].append(step)
                say(f"  {len(self.streams):,} streams open ({report.rate:,.0f}/s), RSS "
                    f"{rss / MB:.1f} MB, {step['per_stream'] / KB:.1f} KB/stream; "
                    f"{check['received']:,} got the check event"
                    + (f"; failures {dict(report.failures)}" if report.failures else ""))
                if report.failures or check["received"] < len(self.streams):
                    res["stopped"] = ("opening failed: " + ", ".join(report.failures)
                                      if report.failures else
                                      f"only {check['received']:,} of {len(self.streams):,} "
                                      f"streams got the check event; closed: {check['closed']}")
                    break
            self.bar.remove_task(sub)
            self.step(f"one process: holding {len(self.streams):,} streams idle")
            cpu = CpuMeter({"server": server.pid})
            cpu.start()
            await asyncio.sleep(self.plan.hold)
            res["hold"] = {"seconds": self.plan.hold, "cpu": cpu.stop(),
                           "rss": rss_bytes(server.pid),
                           "check": await self.reach_all(server.port, acc, arrivals, 60)}
            self.close_streams()
            await asyncio.sleep(1.5)
            res["rss_after_close"] = rss_bytes(server.pid)
        finally:
            self.close_streams()
            self.stop(server)
        await self.deflate_phase(url, acc)

    async def deflate_phase(self, url: str, acc: Accounts) -> None:
        """1,000 streams that negotiate permessage-deflate, on a fresh server."""
        n = self.plan.deflate
        self.step(f"one process: {n:,} streams with permessage-deflate")
        server = await self.serve("sqlite-deflate", url)
        try:
            await self.warm(server.port, acc, 3)
            arrivals = Arrivals()
            base = await self.baseline(server, acc, arrivals, deflate=True)
            report = await open_streams(server.port, acc.member_tokens, n, arrivals.on_event,
                                        into=self.streams, deflate=True)
            await self.wait_subscribed(server.port, len(self.streams), 60)
            await asyncio.sleep(2.0)
            rss = rss_bytes(server.pid)
            check = await self.reach_all(server.port, acc, arrivals, 30)
            self.out["deflate"] = {
                "open": len(self.streams), "negotiated": sum(s.compressed for s in self.streams),
                "failures": dict(report.failures), "base_rss": base, "rss": rss,
                "per_stream": (rss - base) / max(1, len(self.streams)), "check": check}
            say(f"  deflate: {(rss - base) / max(1, len(self.streams)) / KB:.1f} KB/stream")
        finally:
            self.close_streams()
            self.stop(server)

    async def balance(self, port: int, pids: list[int], tokens: list[str],
                      arrivals: Arrivals) -> dict[str, int]:
        """Re-open streams until every worker holds about the same number; the spread."""
        for _ in range(8):
            owner = peer_owner(port, pids)
            held: dict[int, list[WsStream]] = {pid: [] for pid in pids}
            for stream in self.streams:
                if stream.local_port in owner:
                    held[owner[stream.local_port]].append(stream)
            fair = math.ceil(len(self.streams) / len(pids))
            heavy = max(held, key=lambda p: len(held[p]))
            excess = len(held[heavy]) - fair
            if excess <= max(1, len(self.streams) // 50):
                break
            moved = held[heavy][:excess]
            again = [tokens[int(s.label)] for s in moved]
            for s in moved:
                s.close()
                self.streams.remove(s)
            await asyncio.sleep(0.3)
            fresh: list[WsStream] = []
            await open_streams(port, again, len(again), arrivals.on_event, into=fresh)
            for s, i in zip(fresh, (int(m.label) for m in moved), strict=False):
                s.label = str(i)  # keep the account's index, for a later move
            self.streams += fresh
        owner = peer_owner(port, pids)
        counts = Counter(owner.get(s.local_port, 0) for s in self.streams)
        return {str(pid): counts.get(pid, 0) for pid in pids}

    async def balanced_conns(self, port: int, pids: list[int], n: int) -> list[HttpConn]:
        """``n`` keep-alive connections spread evenly over the worker processes."""
        per = math.ceil(n / len(pids))
        kept: dict[int, list[HttpConn]] = {pid: [] for pid in pids}
        for _ in range(n * 20):
            if sum(len(v) for v in kept.values()) >= n:
                break
            conn = HttpConn(port)
            await conn.request(build("GET", "/healthz", port))
            pid = peer_owner(port, pids).get(conn.local_port)
            if pid is not None and len(kept[pid]) < per:
                kept[pid].append(conn)
            else:
                conn.close()
        return [c for conns in kept.values() for c in conns][:n]

    async def cluster_phase(self, workers: int, url: str, acc: Accounts) -> None:
        """Idle memory, fan-out and message throughput on PostgreSQL + Redis."""
        key = f"w{workers}"
        res: dict[str, Any] = {"workers": workers}
        self.out[key] = res
        self.step(f"{workers} process(es), PostgreSQL + Redis: idle memory")
        server = await self.serve(key, url, workers=workers, redis=True)
        try:
            deadline = perf() + 30
            while len(pids := worker_pids(server.pid)) < workers and perf() < deadline:
                await asyncio.sleep(0.2)
            await self.warm(server.port, acc, 4 * workers)
            await asyncio.sleep(1.0)
            res["idle_rss"] = tree_rss_bytes(server.pid)
            res["idle_rss_workers"] = [rss_bytes(p) for p in pids]
            res["idle_rss_supervisor"] = rss_bytes(server.pid) if workers > 1 else 0
            say(f"  {workers} process(es): idle RSS {res['idle_rss'] / MB:.1f} MB (tree)")
            await self.fanout(server, pids, acc, res)
            await self.throughput(server, pids, acc, res)
        finally:
            self.close_streams()
            self.stop(server)

    async def fanout(self, server: Proc, pids: list[int], acc: Accounts,
                     res: dict[str, Any]) -> None:
        plan, port = self.plan, server.port
        self.step(f"{len(pids)} process(es): fan-out to {plan.fanout:,} streams")
        arrivals = Arrivals()
        tokens = acc.member_tokens[:plan.fanout]
        report = await open_streams(port, tokens, len(tokens), arrivals.on_event,
                                    into=self.streams)
        if report.failures:
            raise RuntimeError(f"could not open the fan-out streams: {dict(report.failures)}")
        res["fanout_spread"] = await self.balance(port, pids, tokens, arrivals)
        await self.wait_subscribed(port, len(self.streams), 60)
        check = await self.reach_all(port, acc, arrivals, 30)
        if check["received"] < len(self.streams):
            raise RuntimeError(f"fan-out streams not all reached: {check}")
        bursts = []
        cpu = CpuMeter({"server": server.pid})
        for b in range(plan.bursts + 2):  # the first two warm up
            if b == 2:
                cpu.start()
            tag = f"burst-{secrets.token_hex(3)}-{b}"
            waiter = arrivals.expect(tag, len(self.streams))
            t0 = perf()
            ack = await self.presence(port, acc, tag, "away" if b % 2 else "online")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, 60)
            lat = [t - t0 for t in arrivals.forget(tag)]
            if b >= 2:
                bursts.append({"ack": ack, "received": len(lat), "p50": percentile(lat, 50),
                               "p99": percentile(lat, 99), "last": max(lat, default=math.nan),
                               "all": lat})
        split = cpu.stop()
        pooled = [x for burst in bursts for x in burst.pop("all")]
        delivered = sum(b["received"] for b in bursts)
        res["fanout"] = {
            "streams": len(self.streams), "bursts": bursts, "delivered": delivered,
            "expected": len(self.streams) * len(bursts),
            "events_per_s": delivered / split["seconds"], "cpu": split,
            "p50_ms": percentile(pooled, 50) * 1000, "p99_ms": percentile(pooled, 99) * 1000,
            "max_ms": max(pooled, default=math.nan) * 1000,
            "ack_p50_ms": percentile([b["ack"] for b in bursts], 50) * 1000,
            "last_p50_ms": percentile([b["last"] for b in bursts], 50) * 1000}
        f = res["fanout"]
        say(f"  fan-out: {f['events_per_s']:,.0f} events/s, p50 {f['p50_ms']:.0f} ms, "
            f"p99 {f['p99_ms']:.0f} ms; spread {res['fanout_spread']}")
        self.close_streams()
        await asyncio.sleep(1.0)

    async def throughput(self, server: Proc, pids: list[int], acc: Accounts,
                         res: dict[str, Any]) -> None:
        plan, port = self.plan, server.port
        self.step(f"{len(pids)} process(es): messages over {plan.pairs} pairs")
        arrivals = Arrivals()
        receivers = [p[3] for p in acc.pairs]
        await open_streams(port, receivers, len(receivers), arrivals.on_event, into=self.streams)
        res["msg_stream_spread"] = await self.balance(port, pids, receivers, arrivals)
        await self.wait_subscribed(port, len(self.streams), 30)
        conns = await self.balanced_conns(port, pids, len(acc.pairs))
        owner = peer_owner(port, pids)
        res["msg_conn_spread"] = dict(Counter(str(owner.get(c.local_port, 0)) for c in conns))
        run = secrets.token_hex(3)
        sent: dict[str, float] = {}
        counter = iter(range(10**9))

        async def send(_: HttpConn, i: int) -> tuple[bool, str]:
            _sender, token, receiver, _rt = acc.pairs[i]
            cmid = f"{run}-{i}-{next(counter)}"
            body = json.dumps({"to": receiver, "body": f"m {cmid}", "client_msg_id": cmid})
            sent[cmid] = perf()
            status, answer = await conns[i].request(build(
                "POST", "/v1/messages", port, bearer(token, json_body=True), body.encode()))
            return status == 201, f"{status} {answer[:80]!r}"

        r = await closed_loop("messages", port, len(conns), plan.warmup, plan.duration, send,
                              CpuMeter({"server": server.pid}))
        split = r.extra["cpu"]
        deadline = perf() + 5
        while perf() < deadline and any(c not in arrivals.times for c in sent):
            await asyncio.sleep(0.05)
        lat = [arrivals.times[c][0] - t for c, t in sent.items() if c in arrivals.times]
        lost = Counter(f"pr{int(c.split('-')[1]):02d}" for c in sent if c not in arrivals.times)
        closed = Counter(s.close_reason for s in self.streams if not s.alive)
        for conn in conns:
            conn.close()
        res["messages"] = {
            "rate": r.rate, "errors": r.errors, "error_samples": dict(r.error_samples),
            "post_p50_ms": r.pct(50), "post_p99_ms": r.pct(99), "sent": len(sent),
            "delivered": len(lat), "e2e_p50_ms": percentile(lat, 50) * 1000,
            "e2e_p99_ms": percentile(lat, 99) * 1000, "cpu": split,
            "lost_by_receiver": dict(lost), "closed_streams": dict(closed),
            "per_server_cpu_s": r.rate / split["server"] if split["server"] else 0}
        m = res["messages"]
        if lost:
            say(f"  [red]lost messages by receiver: {dict(lost)}; closed streams: {dict(closed)}")
        say(f"  messages: {m['rate']:,.0f}/s, delivered {m['delivered']}/{m['sent']}, e2e p99 "
            f"{m['e2e_p99_ms']:.0f} ms; CPU {cpu_text(split)}")
        self.close_streams()


async def run(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    """All phases; the results (also partial ones, with ``errors`` set, on a failure)."""
    limit = raise_nofile(max(65536, plan.streams * 2 + 1000))
    steps = 6 + len({min(1000, plan.streams), plan.streams}) + (7 if args.pg else 0)
    started = time.time()
    with progress() as bar, private_redis(args.redis) as (redis_url, redis_what):
        task = bar.add_task("compare-streams", total=steps)
        bench = Bench(plan, bar, task, redis_url)
        bench.out.update(machine=machine_line(), nofile=limit, redis=redis_what,
                         cores=os.cpu_count(), plan=plan.__dict__,
                         command=" ".join(["bench/compare_streams.py", *args.argv]))
        bench.step("machine: two CPU-bound processes vs one")
        bench.out["cpu_scaling"] = cpu_scaling()
        try:
            await bench.guarded("yardstick", bench.yardstick())
            await bench.guarded("streams", bench.streams_phase())
            if not args.pg:
                bench.out["errors"]["postgres"] = f"PostgreSQL at {args.pg_url} does not answer"
            else:
                bench.step("PostgreSQL: seeding")
                with pg_database(args.pg_url) as url:
                    acc = await seed_accounts(url, members=plan.fanout, pairs=plan.pairs)
                    for workers in (1, 2):
                        await bench.guarded(f"{workers} process(es)",
                                            bench.cluster_phase(workers, url, acc))
        finally:
            bench.cleanup()
            bench.out["seconds"] = time.time() - started
    return bench.out


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Plan]:
    """The command line, and the sizes it asks for."""
    p = parser(__doc__, "small sizes (under ~2 minutes)")
    p.add_argument("--streams", type=int, help="streams held by one process (10,000; quick "
                   "1,000)")
    p.add_argument("--fanout", type=int, help="buddies of the sender, one stream each (1,000; "
                   "quick 200)")
    p.add_argument("--bursts", type=int, help="measured fan-out bursts (20; quick 5)")
    p.add_argument("--pairs", type=int, default=20, help="buddy pairs sending messages")
    p.add_argument("--duration", type=float, help="seconds of the message phase (10; quick 3)")
    p.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0",
                   help="Redis to use when redis-server is not installed (a private one is "
                   "started otherwise)")
    args = parse(p, argv)
    q = args.quick
    plan = Plan(quick=q, streams=args.streams or (1000 if q else 10_000),
                fanout=args.fanout or (200 if q else 1000), bursts=args.bursts or (5 if q else 20),
                pairs=max(1, min(args.pairs, 99)), duration=args.duration or (3.0 if q else 10.0),
                warmup=0.5 if q else 1.0, hold=3.0 if q else 45.0, deflate=200 if q else 1000)
    args.pg = pg_available(args.pg_url)
    return args, plan


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 when every phase ran, 130 on Ctrl-C."""
    args, plan = parse_args(argv)
    try:
        out = run_loop(run(args, plan))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted: every server started was stopped, the PostgreSQL database dropped")
        return 130
    block = render_block(out)
    print(block)
    if out["errors"]:  # a partial run must not replace the figures of record
        say(f"[red]phases failed: {', '.join(out['errors'])}; nothing written")
        return 1
    if args.write:
        CHARTS.mkdir(parents=True, exist_ok=True)
        charts = draw_charts(out)
        (CHARTS / "compare-streams.json").write_text(json.dumps(out, indent=1, default=str))
        write_block("compare-streams", block)
        say(f"wrote docs/performance.md (block compare-streams), "
            f"{', '.join(c.name for c in charts)} and compare-streams.json in {CHARTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
