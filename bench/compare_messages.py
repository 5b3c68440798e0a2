"""Side-by-side benchmark of messages and logins (issue 6): interapp vs Synapse vs Prosody.

    .venv/bin/python bench/compare_messages.py [--quick] [--pairs 20] [--messages 10000]
                                               [--write | --no-write]

All three servers run on 127.0.0.1 at once (``bench/compare_peers.py``), each with ``--pairs``
pairs of buddies linked through one :class:`~interapp.host.Host` per network; this process is
the load generator *and* the host. Per network (interapp, Prosody, Synapse):

* **warm-up** — one message per pair, repeated until every receiver's stream delivers;
* **saturation** — every sender sends with ``Host.send``, at most ``--window`` messages
  undelivered (a closed loop on delivery, the same offered load for every network); receivers
  consume ``Host.events()``. Throughput = received ÷ (last receipt - first send); latency =
  receipt - start of the send call. ``--messages`` for interapp and Prosody; Synapse bounded by
  ``--synapse-seconds`` / ``--synapse-messages``;
* **paced** — ``--rate`` messages/s for ``--paced-seconds``, round-robin, open loop: latency
  from the *intended* send time.

Every body is unique and checked to arrive exactly once. Then logins/s through the plug-ins
(``--login-concurrency`` workers, ``--login-seconds`` each): interapp password, refresh and
same-account JWT-bearer grants, Synapse password login, Prosody SASL login. CPU of every
process is recorded per phase. Results: the ``compare-messages`` block of
``docs/performance.md``, charts and ``compare-messages.json`` in ``docs/perf/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit
from benchkit import LocalMinter
from compare_peers import (
    NETWORKS,
    PASSWORD,
    CpuMeter,
    Network,
    PeerMissing,
    Peers,
    check_peers,
    cpu_meter,
    versions,
)

perf = time.perf_counter
STALL = 30.0  # seconds a sender waits for a free window slot before it gives up


# --------------------------------------------------------------------------- results


@dataclass
class MsgResult:
    """One message phase of one network."""

    network: str
    phase: str  # "saturation" | "paced"
    planned: int
    sent: int = 0
    received: int = 0
    duplicates: int = 0
    unexpected: int = 0
    seconds: float = 0.0  # first send → last receipt
    latencies: list[float] = field(default_factory=list)  # seconds
    acks: list[float] = field(default_factory=list)  # the send call's own duration
    errors: Counter[str] = field(default_factory=Counter)
    stalls: int = 0
    bound: str = ""  # which bound stopped the phase early, if any
    rate: float = 0.0  # paced: the intended rate
    cpu: dict[str, float] = field(default_factory=dict)  # cores per process

    @property
    def missing(self) -> int:
        """Sent but never received."""
        return self.sent - self.received

    @property
    def throughput(self) -> float:
        """Messages received per second."""
        return self.received / self.seconds if self.seconds > 0 else math.nan

    def p(self, q: float) -> float:
        """Latency percentile, seconds."""
        return benchkit.percentile(self.latencies, q)

    def summary(self) -> dict[str, Any]:
        """Plain data for the JSON file."""
        return benchkit.jsonable(self, missing=self.missing,
                                 throughput_per_s=benchkit.jsonable(self.throughput))


@dataclass
class OpResult:
    """One logins/s phase."""

    name: str
    label: str
    concurrency: int
    count: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def rate(self) -> float:
        """Completed operations per second."""
        return self.count / self.seconds if self.seconds > 0 else math.nan

    def summary(self) -> dict[str, Any]:
        """Plain data for the JSON file."""
        return benchkit.jsonable(self, rate_per_s=benchkit.jsonable(self.rate))


# --------------------------------------------------------------------------- messages


class Tracker:
    """Which bodies were sent when, and what each receiver's stream delivered."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[float, Callable[[], None] | None]] = {}
        self.latency: dict[str, dict[str, float]] = {}  # phase → body → seconds
        self.duplicates: Counter[str] = Counter()
        self.unexpected = 0
        self.last: dict[str, float] = {}

    def expect(self, body: str, origin: float, done: Callable[[], None] | None = None) -> None:
        """Register a body before it is sent; ``done`` runs when it arrives."""
        self.pending[body] = (origin, done)

    def forget(self, body: str) -> bool:
        """The send failed: do not wait for it (False: it had arrived all the same)."""
        return self.pending.pop(body, None) is not None

    def got(self, body: str, now: float) -> None:
        """A receiver's stream delivered ``body``."""
        phase = body.split(":", 1)[0]
        entry = self.pending.pop(body, None)
        if entry is None:
            if body in self.latency.get(phase, {}):
                self.duplicates[phase] += 1
            else:
                self.unexpected += 1
            return
        origin, done = entry
        self.latency.setdefault(phase, {})[body] = now - origin
        self.last[phase] = now
        if done is not None:
            done()

    def received(self, phase: str) -> int:
        """Distinct bodies of ``phase`` received so far."""
        return len(self.latency.get(phase, {}))

    def outstanding(self, phase: str) -> int:
        """Bodies of ``phase`` sent (or being sent) and not received yet."""
        prefix = phase + ":"
        return sum(1 for b in self.pending if b.startswith(prefix))


class Streams:
    """The network's host's merged event stream (``Host.events()``: both sides of every pair
    have the application open); the receivers' messages feed a :class:`Tracker`."""

    def __init__(self, host: Any, net: Network, pairs: int, tracker: Tracker) -> None:
        self.host, self.net, self.pairs, self.tracker = host, net, pairs, tracker
        self.task: asyncio.Task[Any] | None = None
        self.sub: Any = None

    async def __aenter__(self) -> Streams:
        from interapp.host import events

        receivers = {self.net.target("r", i) for i in range(self.pairs)}
        self.sub = self.host.events()

        async def consume() -> None:
            async for ev in self.sub:
                if isinstance(ev, events.MessageReceived) and ev.target in receivers:
                    self.tracker.got(ev.message.body, perf())
                elif isinstance(ev, events.LinkNeedsReauth):
                    raise RuntimeError(f"{ev.target}: the link needs re-authentication")

        self.task = asyncio.create_task(consume())
        return self

    def check(self) -> None:
        """Raise if the stream died (e.g. a link needs re-authentication)."""
        task = self.task
        if task is not None and task.done() and not task.cancelled() and \
                task.exception() is not None:
            raise RuntimeError(f"{self.net.name}: the event stream failed: "
                               f"{task.exception()!r}")

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.sub.aclose()


# the sizes of the phases that --quick changes: (full run, quick run)
DEFAULTS = {"messages": (10_000, 1_000), "saturation_seconds": (300.0, 60.0),
            "synapse_seconds": (30.0, 8.0), "synapse_messages": (1_000, 300),
            "paced_seconds": (20.0, 6.0), "grace": (20.0, 10.0), "login_seconds": (10.0, 3.0)}
SIZES = ("pairs", "messages", "window", "saturation_seconds", "synapse_seconds",
         "synapse_messages", "rate", "paced_seconds", "grace", "login_seconds",
         "login_concurrency")


class Bench:
    """Runs the phases against :class:`Peers` and keeps the results."""

    def __init__(self, peers: Peers, sizes: argparse.Namespace, bar: Any,
                 advance: Callable[[], None]) -> None:
        self.peers, self.s, self.bar, self.advance = peers, sizes, bar, advance
        self.cpu = cpu_meter(peers.pids)
        self.token = uuid.uuid4().hex[:6]
        self.messages: dict[str, dict[str, MsgResult]] = {}
        self.logins: dict[str, OpResult] = {}

    # --- helpers -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def ticking(self, description: str, total: float,
                      value: Callable[[], float]) -> AsyncIterator[None]:
        """A progress task for one phase, refreshed four times a second."""
        task = self.bar.add_task(description, total=max(total, 1))

        async def tick() -> None:
            while True:
                self.bar.update(task, completed=min(value(), total))
                await asyncio.sleep(0.25)

        ticker = asyncio.create_task(tick())
        try:
            yield
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            self.bar.remove_task(task)

    async def send(self, net: Network, i: int, body: str) -> None:
        """Pair ``i``'s sender sends ``body`` through its network's host (``Host.send``)."""
        await self.peers.hosts[net.name].send(net.target("s", i), net.receivers[i].handle,
                                              body)

    async def counted_send(self, net: Network, i: int, body: str, res: MsgResult) -> bool:
        """Send ``body`` and count it in ``res`` (its send time, or its error); True if sent."""
        start = perf()
        try:
            await self.send(net, i, body)
        except Exception as exc:
            res.errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
            return False
        res.sent += 1
        res.acks.append(perf() - start)
        return True

    async def drain(self, tracker: Tracker, streams: Streams, phase: str,
                    limit: float) -> None:
        """Wait until every message of ``phase`` arrived, or ``limit`` seconds."""
        deadline = perf() + limit
        while tracker.outstanding(phase) and perf() < deadline:
            streams.check()
            await asyncio.sleep(0.02)

    # --- message phases ------------------------------------------------------------------------

    async def network(self, net: Network) -> None:
        """Warm-up, saturation and paced phases of one network."""
        tracker = Tracker()
        async with Streams(self.peers.hosts[net.name], net, self.s.pairs, tracker) as streams:
            await self.warm_up(net, tracker, streams)
            sat = await self.saturation(net, tracker, streams)
            paced = await self.paced(net, tracker, streams)
        for r, phase in ((sat, "sat"), (paced, "paced")):
            r.duplicates = tracker.duplicates[phase]
        sat.unexpected = tracker.unexpected  # not attributable to a phase: counted once
        self.messages[net.name] = {"saturation": sat, "paced": paced}

    async def warm_up(self, net: Network, tracker: Tracker, streams: Streams) -> None:
        """One message per pair until every stream delivers (connections, caches, rooms)."""
        waiting = set(range(self.s.pairs))
        deadline = perf() + 90
        attempt = 0
        async with self.ticking(f"{net.label}: warm-up", self.s.pairs,
                                lambda: self.s.pairs - len(waiting)):
            while waiting and perf() < deadline:
                bodies = []
                for i in sorted(waiting):
                    body = f"warm:{i}:{attempt}:{self.token}"
                    tracker.expect(body, perf(), lambda i=i: waiting.discard(i))
                    bodies.append((i, body))
                await asyncio.gather(*(self.send(net, i, b) for i, b in bodies))
                until = perf() + 3
                while waiting and perf() < until:
                    streams.check()
                    await asyncio.sleep(0.05)
                attempt += 1
        if waiting:
            raise RuntimeError(f"{net.label}: pairs {sorted(waiting)} received nothing in "
                               "90 s of warm-up")
        await asyncio.sleep(0.5)  # late copies of retried warm-up messages

    async def saturation(self, net: Network, tracker: Tracker, streams: Streams) -> MsgResult:
        """All senders at once, each with at most ``window`` messages undelivered."""
        synapse = net.name == "matrix"
        total = min(self.s.messages, self.s.synapse_messages) if synapse else self.s.messages
        limit = self.s.synapse_seconds if synapse else self.s.saturation_seconds
        res = MsgResult(net.name, "saturation", total)
        pairs = self.s.pairs
        counts = [total // pairs + (1 if i < total % pairs else 0) for i in range(pairs)]
        first: list[float] = []

        async def sender(i: int) -> None:
            slots = asyncio.Semaphore(self.s.window)
            for k in range(counts[i]):
                if perf() >= deadline:
                    res.bound = f"time bound of {limit:g} s reached"
                    return
                try:
                    await asyncio.wait_for(slots.acquire(), STALL)
                except TimeoutError:
                    res.stalls += 1
                    return
                body = f"sat:{i}:{k}:{self.token}"
                start = perf()
                if not first:
                    first.append(start)
                tracker.expect(body, start, slots.release)
                if not await self.counted_send(net, i, body, res) and \
                        tracker.forget(body):
                    slots.release()  # arrived bodies released their slot already

        async with self.ticking(f"{net.label}: saturation", total,
                                lambda: tracker.received("sat")):
            before = self.cpu.snap()
            deadline = perf() + limit
            await asyncio.gather(*(sender(i) for i in range(pairs)))
            await self.drain(tracker, streams, "sat", self.s.grace)
            after = self.cpu.snap()
        lat = tracker.latency.get("sat", {})
        res.received, res.latencies = len(lat), list(lat.values())
        if first and "sat" in tracker.last:
            res.seconds = tracker.last["sat"] - first[0]
        res.cpu = CpuMeter.cores(before, after)
        benchkit.say(f"{net.label}: saturation {benchkit.fmt_rate(res.throughput)} "
                     f"({res.received}/{res.sent} received; p50 {benchkit.fmt_ms(res.p(50))}, "
                     f"p99 {benchkit.fmt_ms(res.p(99))})" + (f"; {res.bound}" if res.bound
                                                              else ""))
        return res

    async def paced(self, net: Network, tracker: Tracker, streams: Streams) -> MsgResult:
        """``rate`` messages/s, round-robin over the pairs, latency from the intended time."""
        n = max(1, round(self.s.rate * self.s.paced_seconds))
        res = MsgResult(net.name, "paced", n, rate=self.s.rate)
        t0 = perf() + 0.2

        async def one(k: int) -> None:
            intended = t0 + k / self.s.rate
            await asyncio.sleep(max(0.0, intended - perf()))
            i = k % self.s.pairs
            body = f"paced:{i}:{k}:{self.token}"
            tracker.expect(body, intended)
            if not await self.counted_send(net, i, body, res):
                tracker.forget(body)

        async with self.ticking(f"{net.label}: paced {self.s.rate:g}/s", n,
                                lambda: tracker.received("paced")):
            before = self.cpu.snap()
            await asyncio.gather(*(one(k) for k in range(n)))
            await self.drain(tracker, streams, "paced", self.s.grace)
            after = self.cpu.snap()
        lat = tracker.latency.get("paced", {})
        res.received, res.latencies = len(lat), list(lat.values())
        res.seconds = after[0] - t0
        res.cpu = CpuMeter.cores(before, after)
        benchkit.say(f"{net.label}: paced {self.s.rate:g}/s p50 {benchkit.fmt_ms(res.p(50))}, "
                     f"p99 {benchkit.fmt_ms(res.p(99))} ({res.received}/{res.sent} received)")
        return res

    # --- logins ----------------------------------------------------------------------------------

    async def closed_loop(self, name: str, label: str, prepare: Callable[[int], Awaitable[Any]],
                          op: Callable[[Any], Awaitable[Any]], close: bool = True) -> OpResult:
        """``login_concurrency`` workers repeat ``op`` (bounded to 60 s, as the host bounds its
        calls) for ``login_seconds``, each on its state ``(plugin, …)`` from ``prepare`` (not
        timed; it also warms the path once); ``op`` returns the next state. ``close``: close
        each state's plug-in afterwards."""
        c, seconds = self.s.login_concurrency, self.s.login_seconds
        res = OpResult(name, label, c)
        states = list(await asyncio.gather(*(prepare(w) for w in range(c))))

        async def worker(w: int) -> None:
            while perf() < end:
                start = perf()
                try:
                    async with asyncio.timeout(60):
                        states[w] = await op(states[w])
                except Exception as exc:
                    res.errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
                    await asyncio.sleep(0.05)
                    continue
                done = perf()
                if done <= end:
                    res.count += 1
                    res.latencies.append(done - start)

        before = self.cpu.snap()
        begin = before[0]
        end = begin + seconds
        async with self.ticking(label, seconds, lambda: min(perf() - begin, seconds)):
            await asyncio.gather(*(worker(w) for w in range(c)))
        after = self.cpu.snap()
        res.seconds = seconds
        res.cpu = CpuMeter.cores(before, (end, after[1]))
        if close:
            await asyncio.gather(*(s[0].close() for s in states), return_exceptions=True)
        benchkit.say(f"{label}: {benchkit.fmt_rate(res.rate)} (p50 "
                     f"{benchkit.fmt_ms(benchkit.percentile(res.latencies, 50))}, "
                     f"{sum(res.errors.values())} errors)")
        self.logins[name] = res
        self.advance()
        return res

    def answers(self, net: str, w: int) -> dict[str, Any]:
        """Worker ``w``'s login answers on ``net``."""
        from interapp.secret import Secret

        account = self.peers.networks[net].senders[w % self.s.pairs]
        return {"username": account.username, "password": Secret(account.password)}

    async def logged_in(self, net: str, w: int) -> tuple[Any, Any, dict[str, Any]]:
        """A fresh plug-in of ``net`` logged in as worker ``w``: (plugin, login, answers)."""
        plugin, answers = self.peers.plugin_for(net), self.answers(net, w)
        return plugin, await plugin.login(answers), answers

    async def login_phases(self) -> None:
        """interapp password / refresh / JWT grants, Synapse and Prosody logins."""
        from interapp.host import Branch

        async def password(state: tuple[Any, Any, dict[str, Any]]) -> Any:
            await state[0].login(state[2])
            return state

        async def refresh(state: tuple[Any, Any]) -> tuple[Any, Any]:
            plugin, credential = state
            return plugin, await plugin.refresh(plugin.prepare_refresh(credential))

        await self.closed_loop("interapp-password", "interapp: password grant",
                               lambda w: self.logged_in("interapp", w), password)

        async def refresh_prepare(w: int) -> tuple[Any, Any]:
            plugin, login, _ = await self.logged_in("interapp", w)
            return plugin, login.credential

        await self.closed_loop("interapp-refresh", "interapp: refresh grant", refresh_prepare,
                               refresh)

        out = await self.peers.hosts["interapp"].connect("interapp-shared")  # SHARED, once
        if out.branch is not Branch.SHARED:
            raise RuntimeError(f"same-account login through the host took {out.branch}")
        local = LocalMinter(self.peers.home_url, *self.peers.home_client)
        await local.sign_in("bench", PASSWORD)
        # Each grant needs a fresh assertion (the server refuses a re-used jti): the local
        # application mints a pool before the timed loop (sized from the refresh rate), and a
        # grant that finds the pool empty mints its own inline (counted in the note).
        audience = await self.peers.plugin_for("interapp", "shared").audience()
        pool: list[Any] = []
        want = math.ceil(self.logins["interapp-refresh"].rate * self.s.login_seconds * 1.3) + 16
        minted_at = perf()
        stop = minted_at + 90

        async def minter() -> None:
            while len(pool) < want and perf() < stop:
                pool.append(await local.assertion_for(audience))

        await asyncio.gather(*(minter() for _ in range(self.s.login_concurrency)))
        premade, mint_rate = len(pool), len(pool) / max(perf() - minted_at, 1e-9)
        inline = [0]

        async def jwt_prepare(w: int) -> tuple[Any]:
            plugin = self.peers.plugin_for("interapp", "shared")
            await plugin.login_with_assertion(await local.assertion_for(audience))
            return (plugin,)

        async def jwt(state: tuple[Any]) -> tuple[Any]:
            if not pool:
                inline[0] += 1
            token = pool.pop() if pool else await local.assertion_for(audience)
            await state[0].login_with_assertion(token)
            return state

        res = await self.closed_loop("interapp-jwt", "interapp: same-account (JWT) grant",
                                     jwt_prepare, jwt)
        await local.aclose()
        res.note = (f"{premade:,} assertions pre-minted by the local application at "
                    f"{benchkit.fmt_rate(mint_rate)}; {inline[0]:,} minted inline, timed")
        await self.closed_loop("synapse-password", "Synapse: password login (matrix)",
                               lambda w: self.logged_in("matrix", w), password)

        async def xmpp_prepare(w: int) -> int:
            await (await self.logged_in("xmpp", w))[0].close()
            return w

        closes: list[float] = []
        closing: set[asyncio.Task[None]] = set()

        async def timed_close(plugin: Any) -> None:
            start = perf()
            await plugin.close()
            closes.append(perf() - start)

        async def xmpp_login(w: int) -> int:
            plugin = self.peers.plugin_for("xmpp")
            try:
                await plugin.login(self.answers("xmpp", w))
            finally:  # the session's end is not part of the login: untimed, in the background
                task = asyncio.create_task(timed_close(plugin))
                closing.add(task)
                task.add_done_callback(closing.discard)
            return w

        res = await self.closed_loop("prosody-login", "Prosody: SASL login + session (xmpp)",
                                     xmpp_prepare, xmpp_login, close=False)
        await asyncio.gather(*closing, return_exceptions=True)
        res.note = (f"session start; close() untimed, p50 "
                    f"{benchkit.fmt_ms(benchkit.percentile(closes, 50))}")


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, run every phase, stop everything; return the results."""
    meta: dict[str, Any] = {"machine": benchkit.machine_line(), "quick": args.quick,
                            "started": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
                            "sizes": {k: getattr(args, k) for k in SIZES}}
    folder = Path(tempfile.mkdtemp(prefix="compare-messages-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            with benchkit.progress() as bar:
                overall = bar.add_task("compare-messages", total=1 + 3 + 5)
                peers = Peers(folder, args.pairs, stack, benchkit.say)
                setup = perf()
                await peers.start()
                meta["setup_seconds"] = round(perf() - setup, 1)
                bench = Bench(peers, args, bar, lambda: bar.advance(overall))
                bench.advance()

                def rss() -> dict[str, float]:
                    return {k: round(benchkit.tree_rss_bytes(p) / 2**20, 1)
                            for k, p in peers.pids.items()}

                meta["rss_setup_mb"] = rss()
                for name in NETWORKS:
                    await bench.network(peers.networks[name])
                    bench.advance()
                meta["rss_messages_mb"] = rss()
                await bench.login_phases()
                meta["rss_mb"] = rss()
                meta["versions"] = versions()
    except BaseException:
        print(f"(server logs kept in {folder})", file=sys.stderr)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    return {"meta": meta, "messages": bench.messages, "logins": bench.logins}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = benchkit.parser(__doc__, "small sizes (about 2 minutes): 1,000 messages, 6 s paced, "
                        "3 s logins")
    p.add_argument("--pairs", type=int, default=20, help="pairs of buddies per network")
    p.add_argument("--messages", type=int, help="saturation messages for interapp and "
                   "Prosody (default 10,000; quick 1,000)")
    p.add_argument("--window", type=int, default=2,
                   help="undelivered messages allowed per sender at saturation (default 2)")
    p.add_argument("--saturation-seconds", type=float,
                   help="time bound of a saturation phase (default 300; quick 60)")
    p.add_argument("--synapse-seconds", type=float,
                   help="Synapse's saturation time bound (default 30; quick 8)")
    p.add_argument("--synapse-messages", type=int,
                   help="Synapse's saturation message bound (default 1,000; quick 300)")
    p.add_argument("--rate", type=float, default=5.0, help="paced rate, messages/s")
    p.add_argument("--paced-seconds", type=float, help="paced phase length (default 20)")
    p.add_argument("--grace", type=float,
                   help="seconds to wait for the last messages of a phase (default 20)")
    p.add_argument("--login-seconds", type=float, help="each logins phase (default 10)")
    p.add_argument("--login-concurrency", type=int, default=8,
                   help="login workers (default 8)")
    args = benchkit.parse(p, argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.pairs < 1 or args.window < 1 or args.rate <= 0 or args.login_concurrency < 1:
        p.error("--pairs, --window, --login-concurrency must be ≥ 1 and --rate > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 on success, 2 when a peer is missing, 130 on Ctrl-C."""
    args = parse_args(argv)
    try:
        check_peers()
    except PeerMissing as exc:
        print(f"compare_messages: {exc}", file=sys.stderr)
        return 2
    try:
        results = benchkit.run_loop(run(args), fast=False)  # the CLI's standard loop
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("compare_messages: interrupted; every server it started was stopped",
              file=sys.stderr)
        return 130
    from compare_report import publish

    publish(results, write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
