"""Summarise the py-spy stacks written by ``server_bench.py --profile DIR``.

    .venv/bin/python bench/profile_summary.py DIR/sqlite-contacts.txt [--top 25] [--thread main]
                                              [--match interapp/]

For each file: samples per thread kind (event loop, aiosqlite connection threads, hashing and
other worker threads), then for the chosen thread kind the top functions by *self* samples and
by *inclusive* samples (a function counts once per stack), as a share of that kind's samples.
``--match`` keeps only functions whose file contains the given text in the inclusive table.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def kind_of(thread_frame: str, frames: list[str]) -> str:
    text = thread_frame + ";" + ";".join(frames[:6])
    if "MainThread" in text:
        return "main"
    if "_connection_worker_thread" in text:
        return "aiosqlite"
    if "to_thread" in text or "anyio" in text or "WorkerThread" in text:
        return "worker"
    return "other"


def func_key(frame: str) -> str:
    m = _FRAME.match(frame)
    return f"{m.group('func')} ({m.group('file')})" if m else frame


def summarise(path: Path, top: int, thread: str, match: str | None) -> str:
    by_kind: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for raw in path.read_text().splitlines():
        stack, _, count_s = raw.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        parts = stack.split(";")
        head, frames = parts[0], parts[1:]
        kind = kind_of(head, frames)
        by_kind[kind] += count
        if kind != thread:
            continue
        total += count
        if frames:
            self_[func_key(frames[-1])] += count
        for key in {func_key(f) for f in frames}:
            incl[key] += count
    out = [f"== {path.name}: samples by thread kind: "
           + ", ".join(f"{k} {v}" for k, v in by_kind.most_common())]
    if not total:
        return "\n".join([*out, f"(no samples on thread kind {thread!r})"])
    out.append(f"-- top self ({thread}, {total} samples)")
    out += [f"{100 * v / total:5.1f}%  {k}" for k, v in self_.most_common(top)]
    out.append(f"-- top inclusive ({thread})" + (f", files matching {match!r}" if match else ""))
    rows = [(k, v) for k, v in incl.most_common() if not match or match in k]
    out += [f"{100 * v / total:5.1f}%  {k}" for k, v in rows[:top]]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--thread", default="main", choices=["main", "aiosqlite", "worker", "other"])
    p.add_argument("--match")
    args = p.parse_args()
    for f in args.files:
        print(summarise(f, args.top, args.thread, args.match))
        print()


if __name__ == "__main__":
    main()
