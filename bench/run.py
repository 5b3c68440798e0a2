"""``make bench``: every benchmark, one after the other, updating ``docs/performance.md``.

    .venv/bin/python bench/run.py [--quick] [--only NAME[,NAME…]] [--write | --no-write]

In order (each is also a command of its own, with more options):

1. ``compare_messages`` — messages and logins plug-in to plug-in, interapp vs Prosody vs
   Synapse (issue 6);
2. ``compare_streams`` — fan-out, 1 vs 2 processes, memory per stream, the bare Starlette
   yardstick (issue 6);
3. ``server_bench`` — one application-server worker on SQLite and PostgreSQL (issue 2);
4. ``host_bench`` — the host: start-up, stored-link resolution, 1,000 targets (issue 3);
5. ``facade_bench`` — the host SDK façade's overhead on a send and on ``buddies()`` against the
   plug-in called directly, interleaved in one run (issue 11);
6. ``agent_bench`` — ``interapp agent``: the local API's round trip, a send through it against
   the in-process façade (issue 13).

A new benchmark goes in as one more row of ``STAGES``: a script whose command line starts
from ``benchkit.parser()`` (``--quick``, ``--write``/``--no-write``) and that writes its own
block with ``benchkit.publish()``. The shared pieces are in ``bench/benchkit.py`` (servers
started with ``serve()`` and seeded with ``seeding()``, CPU with ``CpuMeter``, machine facts,
report blocks, charts) and ``bench/loadkit.py`` (the raw HTTP client, load drivers, event
streams).

They run one at a time, so that each has the machine to itself; each shows its own progress.
A failing benchmark does not stop the others; the exit status is non-zero if any failed, and
the failures are listed at the end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STAGES = ("compare_messages", "compare_streams", "server_bench", "host_bench", "facade_bench",
          "agent_bench")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description="Run every benchmark and update the report.")
    p.add_argument("--quick", action="store_true",
                   help="small sizes: a smoke run of each (writes nothing unless --write)")
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(STAGES)}")
    p.add_argument("--write", dest="write", action="store_true", default=None,
                   help="update docs/performance.md and docs/perf/ (the default, but for --quick)")
    p.add_argument("--no-write", dest="write", action="store_false", help="print results only")
    args = p.parse_args(argv)
    if args.only and set(args.only.split(",")) - set(STAGES):
        p.error(f"--only takes names among {', '.join(STAGES)}")
    if args.write is None:  # smoke figures must not replace the figures of record
        args.write = not args.quick
    return args


def command(name: str, args: argparse.Namespace) -> list[str]:
    """The command line of one stage."""
    argv = [sys.executable, str(HERE / f"{name}.py")]
    if args.quick:
        argv.append("--quick")
    return [*argv, "--write" if args.write else "--no-write"]


def run_stage(argv: list[str]) -> int:
    """Run one benchmark; on Ctrl-C let it stop its servers before giving up on it."""
    proc = subprocess.Popen(argv, cwd=ROOT)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        try:  # the child got the SIGINT too: give it time to stop servers, drop databases
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(30)
        raise


def main(argv: list[str] | None = None) -> int:
    """Run the stages; 0 when every one succeeded."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    names = args.only.split(",") if args.only else list(STAGES)
    failed: list[str] = []
    started = time.monotonic()
    for i, name in enumerate(names, 1):
        print(f"\n=== [{i}/{len(names)}] {name} ===", flush=True)
        t0 = time.monotonic()
        rc = run_stage(command(name, args))
        took = time.monotonic() - t0
        print(f"=== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {took:.0f} s",
              flush=True)
        if rc != 0:
            failed.append(name)
    total = time.monotonic() - started
    if failed:
        print(f"\nbenchmarks failed: {', '.join(failed)} (all done in {total:.0f} s)",
              file=sys.stderr)
        return 1
    print(f"\nall {len(names)} benchmarks done in {total:.0f} s; see docs/performance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
