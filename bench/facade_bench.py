"""The host SDK façade's overhead (issue 11): a send and a ``buddies()`` call through
:class:`interapp.host.Host` against the same plug-in call made directly, side by side.

    .venv/bin/python bench/facade_bench.py [--quick] [--rounds N] [--buddies 100]
                                           [--write | --no-write]

The target, ``chatter``, is a real ``interapp serve`` process (SQLite, one worker); the local
application (``arena``, idle while measuring) runs on a thread of this process. alice has
``--buddies`` buddies on chatter, bob among them; carol has 10 (fixed against per-buddy cost).
The façade side is a ``Host`` with chatter linked through the prompt (``host.send``,
``host.buddies("chatter")``, ``host.buddies()``); the direct side a second object of the same
installed plug-in, logged in by its own ``login()``. Nobody subscribes to the host's events,
so both sides send with ``POST /v1/messages``. Each pair is measured by
:func:`benchkit.overhead` (the two calls alternate). Target: ≤ 5 % at the median. The block
is ``facade-bench`` of ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import tempfile
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from benchkit import (
    fmt_ms,
    machine_line,
    met,
    open_host,
    overhead,
    parse,
    parser,
    plugin_instance,
    publish,
    say,
    seed_app,
    serve,
    vault_key,
)

from interapp.host import Scripted, Secret
from interapp.testing.servers import ThreadedServer

TARGET_PCT = 5.0
SMALL = 10  # carol's buddies
PW = "facade-bench-pw"


async def seed(folder: Path, buddies: int) -> dict[str, tuple[str, str]]:
    """arena: alice; chatter: alice with ``buddies`` buddies (bob first) and carol with
    ``SMALL`` (bob among them). A client on each."""
    others = ["bob", *(f"b{i:03d}" for i in range(1, buddies))]
    pairs = [(0, 2 + i) for i in range(buddies)] + [(1, 2 + i) for i in range(SMALL)]
    return {"arena": await seed_app(folder / "arena.db", PW, ["alice"]),
            "chatter": await seed_app(folder / "chatter.db", PW, ["alice", "carol", *others],
                                      [p for p in pairs if p[1] < 2 + buddies])}


async def measure(folder: Path, arena: ThreadedServer, chatter_url: str,
                  clients: dict[str, tuple[str, str]], rounds: int,
                  buddies: int) -> dict[str, dict[str, float]]:
    """The pairs of calls, each interleaved."""
    cid, secret = clients["chatter"]
    direct = {}
    for user in ("alice", "carol"):
        direct[user] = plugin_instance("interapp", chatter_url, client_id=cid,
                                       client_secret=secret)
        await direct[user].login({"username": user, "password": Secret(PW)})
    alice, carol = direct["alice"], direct["carol"]
    out: dict[str, dict[str, float]] = {}
    async with contextlib.aclosing(await open_host(
            folder / "home", arena.url, clients["arena"], "alice", PW, vault_key=vault_key(),
            env={})) as host:
        for name, user in (("chatter", "alice"), ("chatter-carol", "carol")):
            await host.add_target(name, plugin="interapp", server=chatter_url, client_id=cid,
                                  client_secret=secret)
            await host.connect(name, Scripted({"username": user, "password": PW}))
        bodies = (f"facade-bench {i}" for i in itertools.count())
        small = min(SMALL, buddies)

        async def listed(call: Awaitable[list[Any]], count: int) -> None:
            assert len(await call) == count

        pairs = (("send", lambda: alice.send("bob", next(bodies), uuid.uuid4().hex),
                  lambda: host.send("chatter", "bob", next(bodies))),
                 ("buddies(target)", lambda: listed(alice.buddies(), buddies),
                  lambda: listed(host.buddies("chatter"), buddies)),
                 ("buddies(target) small", lambda: listed(carol.buddies(), small),
                  lambda: listed(host.buddies("chatter-carol"), small)),
                 ("buddies()", lambda: asyncio.gather(alice.buddies(), carol.buddies()),
                  lambda: listed(host.buddies(), buddies + small)))
        for name, plain, wrapped in pairs:
            for _ in range(max(20, rounds // 20)):  # warm-up: pools, statement caches
                await plain()
                await wrapped()
            say(f"{name}: {rounds} rounds, the façade and the plug-in alternating")
            out[name] = await overhead(plain, wrapped, rounds=rounds)
            r = out[name]
            say(f"    direct p50 {r['direct_p50_ms']:.3f} ms, façade p50 "
                f"{r['wrapped_p50_ms']:.3f} ms: {r['overhead_pct']:+.1f} %")
    for plugin in direct.values():
        await plugin.close()
    return out


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    """The ``facade-bench`` block."""
    lines = ["## Host SDK façade overhead", "",
             f"`bench/facade_bench.py`{' --quick' if args.quick else ''}; {machine_line()}. "
             f"The target is a real `interapp serve` process (SQLite, one worker) with "
             f"{args.buddies} buddies of alice; the façade (`Host`, file vault) and a second "
             "object of the same plug-in logged in directly call it alternately, "
             f"{args.rounds:,} rounds each; no event stream is open, so both send over HTTP.",
             "",
             "| call | direct plug-in p50 / p99 | through `Host` p50 / p99 | overhead at p50 "
             "| target ≤ 5 % |", "|---|---|---|---|---|"]
    for name, r in results.items():
        small = min(SMALL, args.buddies)
        what = {"send": "`send` (`Host.send(target, to, body)`)",
                "buddies(target)": f"`buddies` of one target, {args.buddies} buddies "
                                   "(`Host.buddies(\"chatter\")`)",
                "buddies(target) small": f"`buddies` of one target, {small} buddies",
                "buddies()": f"`buddies` of every target (`Host.buddies()`: the two, "
                             f"{args.buddies + small} buddies; direct: both plug-ins' "
                             "`buddies()` gathered)"}[name]
        extra_us = (r["wrapped_p50_ms"] - r["direct_p50_ms"]) * 1000
        lines.append(f"| {what} | {fmt_ms(r['direct_p50_ms'] / 1000)} / "
                     f"{fmt_ms(r['direct_p99_ms'] / 1000)} | "
                     f"{fmt_ms(r['wrapped_p50_ms'] / 1000)} / "
                     f"{fmt_ms(r['wrapped_p99_ms'] / 1000)} | "
                     f"{r['overhead_pct']:+.1f} % ({extra_us:+.0f} µs) | "
                     f"{met(r['overhead_pct'] <= TARGET_PCT)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = parser(__doc__, "300 rounds instead of 2,000")
    p.add_argument("--rounds", type=int, help="rounds per pair of calls (default 2,000)")
    p.add_argument("--buddies", type=int, default=100, help="alice's buddies on chatter")
    args = parse(p, argv)
    args.rounds = args.rounds or (300 if args.quick else 2000)
    with tempfile.TemporaryDirectory(prefix="facade-bench-") as tmp:
        folder = Path(tmp)
        clients = asyncio.run(seed(folder, args.buddies))
        arena = ThreadedServer("arena", folder / "arena.db").start()
        chatter = serve("chatter", folder / "chatter.db", folder)
        try:
            results = asyncio.run(measure(folder, arena, chatter.url, clients, args.rounds,
                                          args.buddies))
        finally:
            chatter.stop()
            arena.stop()
    publish("facade-bench", report(results, args), args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
