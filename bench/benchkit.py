"""Shared pieces of the side-by-side benchmarks (issue 6): progress bar, report blocks, charts,
process memory and latency percentiles.

Every benchmark script of issue 6 (``bench/compare_messages.py``, ``bench/compare_streams.py``)
uses these so that ``make bench`` shows one kind of progress bar, writes its own block of
``docs/performance.md`` between markers without touching the others, and draws its charts in one
style into ``docs/perf/``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import platform
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "performance.md"
CHARTS = ROOT / "docs" / "perf"
console = Console(stderr=True)


# --------------------------------------------------------------------------- progress


@contextlib.contextmanager
def progress() -> Iterator[Progress]:
    """A progress bar on stderr (plain lines when stderr is not a terminal)."""
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                   transient=False, disable=False)
    with bar:
        yield bar


def say(text: str) -> None:
    """One line of commentary under the bar."""
    console.print(text, highlight=False)


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt_ms(seconds: float) -> str:
    """Seconds as milliseconds with sensible precision."""
    if math.isnan(seconds):
        return "—"
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:,.0f} ms"


def fmt_rate(per_second: float) -> str:
    """A rate with thousands separators."""
    if math.isnan(per_second):
        return "—"
    return f"{per_second:,.0f}/s" if per_second >= 100 else f"{per_second:,.1f}/s"


# --------------------------------------------------------------------------- processes


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (``VmRSS``), in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) * 1024 if match else 0


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and all its descendants (a multi-worker server, Synapse's workers)."""
    total = 0
    for child in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):
            total += rss_bytes(child)
    return total


def descendants(pid: int) -> list[int]:
    """All descendants of ``pid`` (from ``/proc/*/stat``)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its live descendants (0 when it is gone)."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += cpu_seconds(p)
    return total


def machine_line() -> str:
    """One line of machine facts for a report."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0]
    return (f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; nproc = {os.cpu_count()}, {model}; "
            f"Python {platform.python_version()}; load average at the start {load:.2f}")


# --------------------------------------------------------------------------- report blocks


def write_block(name: str, markdown: str, path: Path = REPORT) -> None:
    """Replace the block ``name`` of the report (between its markers), or append it."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    body = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Performance\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + body + tail
    else:
        marker = "<!-- server-bench:begin -->"
        if marker in text:  # the issue-6 blocks come before the single-server details
            head, tail = text.split(marker, 1)
            text = f"{head}{body}\n\n{marker}{tail}"
        else:
            text = text.rstrip("\n") + "\n\n" + body + "\n"
    path.write_text(text)


# --------------------------------------------------------------------------- charts


@dataclass(frozen=True)
class Bar:
    """One bar of a chart: a label, a value and an optional error/annotation."""

    label: str
    value: float
    note: str = ""


def bar_chart(file_name: str, title: str, unit: str, bars: Sequence[Bar], *,
              target: float | None = None, target_label: str = "target",
              log_scale: bool = False) -> Path:
    """Draw a horizontal bar chart into ``docs/perf/<file_name>`` and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    CHARTS.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(bars) + 1.4), dpi=110)
    labels = [b.label for b in bars]
    values = [0.0 if math.isnan(b.value) else b.value for b in bars]
    colours = ["#3b6ea8" if "interapp" in b.label else "#9a9a9a" for b in bars]
    ax.barh(labels, values, color=colours)
    ax.invert_yaxis()
    if log_scale:
        ax.set_xscale("log")
    top = max([*values, target or 0.0]) or 1.0
    for y, bar in enumerate(bars):
        text = bar.note or (f"{bar.value:,.1f}" if bar.value < 100 else f"{bar.value:,.0f}")
        ax.text(values[y] if values[y] > 0 else top * 0.01, y, f"  {text}", va="center",
                fontsize=8)
    if target is not None:
        ax.axvline(target, color="#c0392b", linestyle="--", linewidth=1)
        # inside the plot, at the bottom: above it the label ran into the title
        ax.text(target, len(bars) - 0.55, f" {target_label}", color="#c0392b", fontsize=8,
                va="bottom")
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(right=top * (3 if log_scale else 1.3))
    fig.tight_layout()
    out = CHARTS / file_name
    fig.savefig(out)
    plt.close(fig)
    return out
