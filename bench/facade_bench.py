"""The host SDK façade's overhead (issue 11): a send and a ``buddies()`` call through
:class:`interapp.host.Host` against the same plug-in call made directly, side by side.

    .venv/bin/python bench/facade_bench.py [--quick] [--rounds N] [--buddies 100]
                                           [--write | --no-write]

The target, ``chatter``, is a real ``interapp serve`` process (SQLite, one worker), so that the
figures are those of an application talking to a server over loopback and the server does not
share this process's GIL; the local application (``arena``, idle while measuring) runs on a
thread of this process. alice has ``--buddies`` buddies on chatter, bob among them; carol has
10 (to tell the fixed cost from the per-buddy cost).

* **through the façade**: a :class:`~interapp.host.Host` on a fresh data folder, signed in to
  arena, with chatter linked through the prompt (a real password login);
  ``host.send("chatter", "bob", …)``, ``host.buddies("chatter")`` and ``host.buddies()`` (all
  targets: the unified list);
* **directly**: a second object of the same installed ``interapp`` plug-in for the same server,
  logged in as alice by its own ``login()``, and its ``send("bob", …, client_msg_id)`` and
  ``buddies()``.

Nobody subscribes to the host's events, so neither side has an event stream open and both
send with ``POST /v1/messages`` (with a stream open the plug-in sends on it instead, on both
sides alike). Each pair is measured by :func:`benchkit.overhead`: the two calls alternate
(which goes first flips every round), so the machine's noise hits both alike; p50/p99 of each,
the overhead of the façade at the median in % and in µs. Target: ≤ 5 % (issue 11). The block
``facade-bench`` of ``docs/performance.md`` is written by a full run (``--quick``: only with
``--write``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import uuid
from pathlib import Path

from benchkit import (
    fmt_ms,
    machine_line,
    met,
    overhead,
    plugin_instance,
    say,
    seeding,
    serve,
    write_block,
)

from interapp.host import Host, Scripted, Secret
from interapp.testing.servers import ThreadedServer

TARGET_PCT = 5.0
SMALL = 10  # carol's buddies
PW = "facade-bench-pw"


async def seed(folder: Path, buddies: int) -> dict[str, tuple[str, str]]:
    """arena: alice; chatter: alice with ``buddies`` buddies (bob first) and carol with
    ``SMALL`` (bob among them). A client on each."""
    clients = {}
    async with seeding(f"sqlite:///{folder / 'arena.db'}", PW) as sd:
        await sd.user("alice")
        cid, secret = await sd.client("bench-host")
        clients["arena"] = (cid, secret or "")
    async with seeding(f"sqlite:///{folder / 'chatter.db'}", PW) as sd:
        alice, carol = await sd.user("alice"), await sd.user("carol")
        others = [await sd.user("bob" if i == 0 else f"b{i:03d}") for i in range(buddies)]
        for i, other in enumerate(others):
            await sd.buddies(alice, other)
            if i < SMALL:
                await sd.buddies(carol, other)
        cid, secret = await sd.client("bench-host")
        clients["chatter"] = (cid, secret or "")
    return clients


async def measure(folder: Path, arena: ThreadedServer, chatter_url: str,
                  clients: dict[str, tuple[str, str]], rounds: int,
                  buddies: int) -> dict[str, dict[str, float]]:
    """The pairs of calls, each interleaved."""
    key = base64.b64encode(os.urandom(32)).decode()
    cid, secret = clients["chatter"]
    direct = {}
    for user in ("alice", "carol"):
        direct[user] = plugin_instance("interapp", chatter_url, client_id=cid,
                                       client_secret=secret)
        await direct[user].login({"username": user, "password": Secret(PW)})
    alice, carol = direct["alice"], direct["carol"]
    out: dict[str, dict[str, float]] = {}
    async with Host.open(folder / "home", vault_key=key, env={}) as host:
        acid, asecret = clients["arena"]
        await host.set_local(arena.url, client_id=acid, client_secret=asecret)
        await host.sign_in("alice", PW)
        for name, user in (("chatter", "alice"), ("chatter-carol", "carol")):
            await host.add_target(name, plugin="interapp", server=chatter_url, client_id=cid,
                                  client_secret=secret)
            await host.connect(name, Scripted({"username": user, "password": PW}))
        n = [0]

        def body() -> str:
            n[0] += 1
            return f"facade-bench {n[0]}"

        async def direct_send() -> None:
            await alice.send("bob", body(), uuid.uuid4().hex)

        async def host_send() -> None:
            await host.send("chatter", "bob", body())

        async def direct_buddies() -> None:
            assert len(await alice.buddies()) == buddies

        async def host_buddies() -> None:
            assert len(await host.buddies("chatter")) == buddies

        async def direct_small() -> None:
            assert len(await carol.buddies()) == min(SMALL, buddies)

        async def host_small() -> None:
            assert len(await host.buddies("chatter-carol")) == min(SMALL, buddies)

        async def direct_both() -> None:
            await asyncio.gather(alice.buddies(), carol.buddies())

        async def host_all() -> None:
            assert len(await host.buddies()) == buddies + min(SMALL, buddies)

        pairs = (("send", direct_send, host_send),
                 ("buddies(target)", direct_buddies, host_buddies),
                 ("buddies(target) small", direct_small, host_small),
                 ("buddies()", direct_both, host_all))
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="300 rounds instead of 2,000")
    p.add_argument("--rounds", type=int, help="rounds per pair of calls (default 2,000)")
    p.add_argument("--buddies", type=int, default=100, help="alice's buddies on chatter")
    p.add_argument("--write", dest="write", action="store_true", default=None)
    p.add_argument("--no-write", dest="write", action="store_false")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (300 if args.quick else 2000)
    write = (not args.quick) if args.write is None else args.write
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
    text = report(results, args)
    print(text)
    if write:
        write_block("facade-bench", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
