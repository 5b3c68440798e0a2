"""The kit every benchmark of ``bench/`` shares: progress, percentiles and formats, CPU and
memory meters, machine facts, server processes, seeding, the command line, the report blocks
of ``docs/performance.md`` and the charts of ``docs/perf/``.

CPU is measured one way everywhere: cores = CPU seconds of a process tree over wall seconds,
"other" = the rest of the machine from ``/proc/stat``. A new benchmark is a script that uses
this kit, writes its block with :func:`publish` and is one more row of ``STAGES`` in
``bench/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import math
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def percentiles_ms(seconds: Sequence[float], ps: Sequence[float] = (50, 90, 99, 100)
                   ) -> dict[str, float | None]:
    """``{"p50": ms, …}`` rounded for JSON (None where there are no values)."""
    out: dict[str, float | None] = {}
    for p in ps:
        v = percentile(seconds, p)
        out[f"p{p:g}"] = None if math.isnan(v) else round(v * 1000, 2)
    return out


def jsonable(value: Any, **extra: Any) -> Any:
    """Plain JSON of a figure, or of a dataclass's fields (and ``extra``): lists of seconds as
    ``percentiles_ms``, floats rounded (NaN as None), counters as dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {**{f.name: jsonable(getattr(value, f.name))
                   for f in dataclasses.fields(value)}, **extra}
    if isinstance(value, list):
        return percentiles_ms(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 3)
    return value


def met(ok: bool) -> str:
    """A target's status cell."""
    return "met" if ok else "**NOT met**"


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


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all CPUs; idle and iowait excluded)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


Reading = tuple[float, dict[str, float]]


class CpuMeter:
    """CPU cores used over an interval by named process trees, by this process and by every
    other process of the machine (PostgreSQL, other people's work): 1.00 = one CPU busy."""

    def __init__(self, pids: dict[str, int], *, me: str = "loadgen", other: str = "other") -> None:
        self.pids, self.me, self.other = pids, me, other
        self._start: Reading | None = None

    def snap(self) -> Reading:
        """A timestamped reading of CPU seconds."""
        values = {name: tree_cpu(pid) for name, pid in self.pids.items()}
        values[self.me] = cpu_seconds(os.getpid())
        values[self.other] = machine_busy() - sum(values.values())
        return time.perf_counter(), values

    @staticmethod
    def cores(a: Reading, b: Reading) -> dict[str, float]:
        """Cores used between readings ``a`` and ``b`` (never below 0)."""
        span = max(b[0] - a[0], 1e-9)
        return {k: max(0.0, (b[1][k] - a[1].get(k, 0.0)) / span) for k in b[1]}

    def start(self) -> None:
        """Begin an interval."""
        self._start = self.snap()

    def stop(self) -> dict[str, float]:
        """Cores used since :meth:`start`, and the interval's ``seconds``."""
        assert self._start is not None, "start() first"
        end = self.snap()
        return {**self.cores(self._start, end), "seconds": end[0] - self._start[0]}


def cpu_text(split: dict[str, float] | None, names: dict[str, str] | None = None) -> str:
    """``server 0.98, load generator 0.36, other 0.01 (total 1.35)``."""
    if not split:
        return "—"
    names = {"loadgen": "load generator", **(names or {})}
    cores = {k: v for k, v in split.items() if k != "seconds"}
    return (", ".join(f"{names.get(k, k)} {v:.2f}" for k, v in cores.items())
            + f" (total {sum(cores.values()):.2f})")


def cpu_model() -> str:
    """The CPU's model name."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def versions(packages: Sequence[str]) -> str:
    """``name version, …`` of the installed ``packages``."""
    parts = []
    for name in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            parts.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join(parts)


def machine_line() -> str:
    """One line of machine facts for a report."""
    load = os.getloadavg()[0]
    return (f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; nproc = {os.cpu_count()}, "
            f"{cpu_model()}; Python {platform.python_version()}; load average at the start "
            f"{load:.2f}")


# --------------------------------------------------------------------------- servers

BIN = Path(sys.executable).parent
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


class Proc:
    """A server subprocess that announces its port in its log (``pattern``'s group 1), in a
    session of its own; stopped by its PID (SIGINT, then SIGKILL), never by name."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path,
                 pattern: str = r"serving \S+ on http://[\d.]+:(\d+)",
                 cpus: set[int] | None = None) -> None:
        self.name, self.log = name, log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            argv, stdout=self._fh, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
            cwd=ROOT, start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        deadline = time.monotonic() + 90
        while not (match := re.search(pattern, log.read_text(errors="replace"))):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({self.proc.returncode}):\n"
                                   f"{log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not announce its port in 90 s")
            time.sleep(0.05)
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's PID."""
        return self.proc.pid

    def wait_http(self, path: str = "/healthz", timeout: float = 30) -> None:
        """Block until ``GET path`` answers 200."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), opener.open(self.url + path, timeout=2) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready on {path}")

    async def wait_ready(self, path: str = "/healthz") -> None:
        """:meth:`wait_http` off the event loop."""
        await asyncio.to_thread(self.wait_http, path)

    def stop(self) -> None:
        """SIGINT, then SIGKILL after 15 s; then SIGKILL to what it left behind."""
        kids = descendants(self.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in kids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self._fh.close()


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without proxies (loopback only) and with ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def serve(app: str, db: Path | str, folder: Path, *, tag: str | None = None,
          args: Sequence[str] = (), wait: bool = True) -> Proc:
    """``interapp serve --app APP`` on a free port of 127.0.0.1 (``db``: a SQLite file or a
    database URL), its data folder ``home-TAG`` and log ``serve-TAG.log`` in ``folder`` (``tag``
    defaults to the app); ready on ``/healthz`` when it returns, unless ``wait=False``."""
    tag = tag or app
    url = db if isinstance(db, str) else f"sqlite:///{db}"
    home = folder / f"home-{tag}"
    home.mkdir(parents=True, exist_ok=True)
    proc = Proc(f"interapp serve ({tag})",
                [str(BIN / "interapp"), "serve", "--app", app, "--db", url, "--host",
                 "127.0.0.1", "--port", "0", *args],
                clean_env(INTERAPP_HOME=str(home)), folder / f"serve-{tag}.log")
    if wait:
        proc.wait_http()
    return proc


def serve_bare(folder: Path, label: str = "bare", cpus: set[int] | None = None) -> Proc:
    """The yardstick, ``bench/bare_server.py`` (a bare Starlette JSON endpoint started like
    ``interapp serve``), ready on ``/json``."""
    proc = Proc(label, [sys.executable, str(ROOT / "bench" / "bare_server.py")], clean_env(),
                folder / f"{label}.log", r"serving on http://[\d.]+:(\d+)", cpus)
    proc.wait_http("/json")
    return proc


def pg_available(base: str) -> bool:
    """Whether the PostgreSQL server ``base`` (a URL without database) answers."""
    try:
        import psycopg

        with psycopg.connect(_pg_dsn(base, "postgres"), connect_timeout=2):
            return True
    except Exception:
        return False


def _pg_dsn(base: str, db: str) -> str:
    return base.replace("postgresql+psycopg://", "postgresql://").rstrip("/") + f"/{db}"


@contextlib.contextmanager
def pg_database(base: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL server ``base``, dropped afterwards; its URL."""
    import psycopg

    name = f"interapp_bench_{secrets.token_hex(4)}"
    with psycopg.connect(_pg_dsn(base, "postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield base.rstrip("/") + f"/{name}"
    finally:
        with contextlib.suppress(Exception), psycopg.connect(_pg_dsn(base, "postgres"),
                                                             autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


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


def run_loop(main: Awaitable[Any], *, fast: bool = True) -> Any:
    """Run ``main`` on uvloop (``fast``, when installed) or the standard loop; SIGTERM cancels
    it like Ctrl-C, so that its ``finally`` blocks stop every server."""
    runner = asyncio.Runner()
    with contextlib.suppress(ImportError):
        if fast:
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)

    async def guarded() -> Any:
        task = asyncio.current_task()
        assert task is not None
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    with runner:
        return runner.run(guarded())


# --------------------------------------------------------------------------- seeding


class Seeder:
    """Accounts, buddies, clients and tokens written straight into a server's database through
    the server's own modules (no HTTP, no password hashing but one), in one transaction."""

    def __init__(self, conn: Any, password: str | None) -> None:
        from interapp.secret import Secret
        from interapp.server import passwords

        self.conn = conn
        self.hashed = passwords.hash_sync(Secret(password)) if password else None

    async def user(self, name: str, display_name: str | None = None) -> Any:
        """A new account (with the seeder's password, if it has one)."""
        from interapp.server import accounts

        return await accounts.create_user(self.conn, name, display_name=display_name,
                                          password_hash=self.hashed)

    async def buddies(self, a: Any, b: Any) -> None:
        """Make ``a`` and ``b`` buddies."""
        from interapp.server import social

        await social.make_buddies(self.conn, a, b)

    async def client(self, name: str, *, public: bool = False) -> tuple[str, str | None]:
        """A new OAuth client: its id and secret (None for a public one)."""
        from interapp.server import accounts

        cid, secret = await accounts.create_client(self.conn, name, public=public)
        return cid, secret.reveal() if secret else None

    async def tokens(self, user_id: str, client_id: str, ttl: int = 4 * 3600) -> dict[str, Any]:
        """An access + refresh token pair issued as a password login would."""
        from interapp.server.oauth import issue

        return await issue.issue_pair(self.conn, user_id=user_id, client_id=client_id,
                                      grant_type="password", access_ttl=ttl,
                                      refresh_ttl=max(ttl, 24 * 3600))


@contextlib.asynccontextmanager
async def seeding(db_url: str, password: str | None = None) -> AsyncIterator[Seeder]:
    """A :class:`Seeder` on ``db_url`` (migrated first); committed when the block ends."""
    from interapp.server.storage import Database

    db = Database.open(db_url)
    try:
        async with db.begin() as conn:
            yield Seeder(conn, password)
    finally:
        await db.close()


async def seed_app(db: Path, password: str, users: Sequence[str],
                   buddies: Sequence[tuple[int, int]] = ()) -> tuple[str, str]:
    """A fresh SQLite application database: ``users`` (one password), ``buddies`` (pairs of
    indexes into ``users``) and a confidential client ``bench-host``; its id and secret."""
    async with seeding(f"sqlite:///{db}", password) as sd:
        made = [await sd.user(name) for name in users]
        for a, b in buddies:
            await sd.buddies(made[a], made[b])
        cid, secret = await sd.client("bench-host")
    return cid, secret or ""


def plugin_instance(plugin: str, server: str, *, client_id: str | None = None,
                    client_secret: Any = None, account_system: str = "separate",
                    name: str | None = None) -> Any:
    """A fresh plug-in object of the installed plug-in ``plugin`` for ``server``, as the host
    starts one for a target, not connected. For the benchmarks that call a plug-in directly
    (logins, the façade's overhead); applications use :class:`interapp.host.Host`."""
    from interapp.host.registry import discover
    from interapp.plugins.contract import TargetConfig
    from interapp.secret import Secret

    if isinstance(client_secret, str):
        client_secret = Secret(client_secret)
    cls = discover().get(plugin).load()
    return cls(TargetConfig(name=name or f"bench-{plugin}", plugin=plugin, server=server,
                            client_id=client_id, client_secret=client_secret,
                            account_system="shared" if account_system == "shared"
                            else "separate"))


def vault_key() -> str:
    """A fresh random vault key."""
    return base64.b64encode(os.urandom(32)).decode()


async def open_host(home: Path, local_url: str, client: tuple[str, Any], user: str,
                    password: str, **options: Any) -> Any:
    """A :class:`~interapp.host.Host` on ``home`` (``options`` go to ``Host.open``), its local
    application at ``local_url`` (``client``: id and secret) and ``user`` signed in to it."""
    from interapp.host import Host

    host = await Host.open(home, **options)
    if host.signed_in is None:
        await host.set_local(local_url, client_id=client[0], client_secret=client[1])
        await host.sign_in(user, password)
    return host


class LocalMinter:
    """Same-account assertions (RFC 8693) about one local user, minted by the local
    application as the host's session does, without a host (for the JWT-grant benchmark)."""

    def __init__(self, url: str, client_id: str, client_secret: Any) -> None:
        from interapp.client import ServerClient

        self.client = ServerClient(url, client_id=client_id, client_secret=client_secret)
        self.token: Any = None

    async def sign_in(self, username: str, password: str) -> None:
        """Password grant at the local application."""
        from interapp.secret import Secret

        body = await self.client.password_grant(username, Secret(password))
        self.token = Secret(str(body["access_token"]))

    async def assertion_for(self, audience: str) -> Any:
        """One assertion addressed to ``audience``."""
        return await self.client.exchange_for_assertion(self.token, audience)

    async def aclose(self) -> None:
        """Close the HTTP pool."""
        await self.client.aclose()


async def bounded(n: int, jobs: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run the jobs at most ``n`` at a time; results in order."""
    import asyncio

    gate = asyncio.Semaphore(n)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(one(j) for j in jobs)))


async def overhead(direct: Callable[[], Awaitable[Any]], wrapped: Callable[[], Awaitable[Any]],
                   *, rounds: int = 2000) -> dict[str, float]:
    """The same call made two ways, interleaved (so machine noise hits both alike): p50 and
    p99 of each in ms and the overhead of ``wrapped`` over ``direct`` at the median, in %.

    For the façade benchmark: ``direct`` calls the plug-in, ``wrapped`` the host SDK."""
    a: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        for fn, out in ((direct, a), (wrapped, b)) if i % 2 else ((wrapped, b), (direct, a)):
            t0 = time.perf_counter()
            await fn()
            out.append(time.perf_counter() - t0)
    pa, pb = percentile(a, 50), percentile(b, 50)
    return {"direct_p50_ms": pa * 1000, "direct_p99_ms": percentile(a, 99) * 1000,
            "wrapped_p50_ms": pb * 1000, "wrapped_p99_ms": percentile(b, 99) * 1000,
            "overhead_pct": (pb - pa) / pa * 100 if pa else math.nan}


# --------------------------------------------------------------------------- command line


def parser(doc: str | None, quick: str) -> argparse.ArgumentParser:
    """The options every benchmark has: ``--quick`` (help: ``quick``) and ``--write`` /
    ``--no-write`` (a full run writes its block, a quick one only with ``--write``)."""
    p = argparse.ArgumentParser(description=(doc or "").strip().split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--write", dest="write", action="store_true", default=None,
                   help="write the block of docs/performance.md (the default, but for --quick)")
    p.add_argument("--no-write", dest="write", action="store_false", help="print only")
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; ``write`` defaults to not ``quick`` (smoke figures never replace real ones)."""
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.write is None:
        args.write = not args.quick
    return args


# --------------------------------------------------------------------------- report blocks


@dataclass
class Table:
    """A report's results: rows of metric / measured / target / status, extra lines below the
    table, and the raw figures (``facts``) the notes are written from."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    facts: dict[str, float] = field(default_factory=dict)

    def add(self, metric: str, measured: str, target: str = "—", status: str = "—") -> None:
        """One row."""
        self.rows.append((metric, measured, target, status))

    def render(self, title: str, head: str, notes: Sequence[str] = ()) -> str:
        """The Markdown block: title, a paragraph, the table, what is missed, the notes."""
        md = [title, "", head, "", *table(["Metric", "Measured", "Target", "Status"],
                                          self.rows), ""]
        md += [*self.extra, ""] if self.extra else []
        missed = [r[0].split(":")[0] for r in self.rows if "NOT met" in r[3]]
        md.append("Not met: " + "; ".join(missed) + "." if missed else
                  "Every target here is met.")
        if notes:
            md += ["", "Where the time goes:", "", *(f"- {n}" for n in notes)]
        return "\n".join(md) + "\n"



def table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table's lines."""
    return [f"| {' | '.join(head)} |", "|" + "---|" * len(head),
            *(f"| {' | '.join(str(c) for c in row)} |" for row in rows)]


def publish(name: str, markdown: str, write: bool, path: Path = REPORT) -> None:
    """Print the block ``name`` and, with ``write``, put it into the report."""
    print(markdown)
    if write:
        write_block(name, markdown, path)
        say(f"wrote {path} (block {name})")


def write_block(name: str, markdown: str, path: Path = REPORT) -> None:
    """Replace the block ``name`` of the report (between its markers), or append it."""
    path.parent.mkdir(parents=True, exist_ok=True)
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
