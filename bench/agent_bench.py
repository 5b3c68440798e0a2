"""Benchmark of ``interapp agent`` (issue 13): the local API's round trip, and a send through
the agent against the same send through the in-process façade, in one run.

    .venv/bin/python bench/agent_bench.py [--quick] [--write | --no-write]

Two application servers (``arena``, the local app; ``chatter``, the target) run on threads of
this process (SQLite); a data folder is configured and chatter linked through the prompt.
Then, on the same servers: (1) **in-process**, a :class:`~interapp.host.Host` on that folder,
listening to its events as an application does, sends N messages to bob (each awaited);
(2) **through the agent**, ``interapp agent`` runs in its own process on the same folder and
``http.client`` on its Unix socket (keep-alive, one connection) times ``GET /agent/v1/state``
and ``POST /agent/v1/messages``. Targets: ``state`` p99 ≤ 2 ms; a send through the agent
≤ 1.2 times the in-process send (p50). The block is ``agent-bench`` of
``docs/performance.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import (
    fmt_ms,
    machine_line,
    open_host,
    parse,
    parser,
    percentile,
    publish,
    say,
    seed_app,
    vault_key,
)

from interapp.host import Host, Scripted, events
from interapp.testing.servers import ThreadedServer

PW = {"alice@arena": "arena-bench-pw", "alice@chatter": "chatter-bench-pw"}


class UnixHTTP(http.client.HTTPConnection):
    """http.client over a Unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("agent", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


async def configure(home: Path, env: dict[str, str], arena: ThreadedServer,
                    chatter: ThreadedServer, clients: dict[str, tuple[str, str]]) -> None:
    """The data folder: arena as the local application, chatter linked through the prompt."""
    host = await open_host(home, arena.url, clients["arena"], "alice", PW["alice@arena"],
                           env=env)
    async with contextlib.aclosing(host):
        ccid, csecret = clients["chatter"]
        await host.add_target("chatter", plugin="interapp", server=chatter.url,
                              client_id=ccid, client_secret=csecret)
        await host.connect("chatter", Scripted({"username": "alice",
                                                "password": PW["alice@chatter"]}))


async def in_process(home: Path, env: dict[str, str], n: int) -> list[float]:
    async with Host.open(home, env=env) as host:
        await host.connect("chatter")
        seen: list[object] = []
        off = host.on(events.Event, seen.append)  # as an application does (so the agent)
        await asyncio.sleep(1.0)  # the stream is open
        for i in range(20):  # warm-up
            await host.send("chatter", "bob", f"warm {i}")
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            await host.send("chatter", "bob", f"in-process {i}")
            times.append(time.perf_counter() - t0)
        off()
        return times


def start_agent(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    exe = Path(sys.executable).with_name("interapp")
    proc = subprocess.Popen([str(exe), "agent"], env=env, text=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    line = ""
    while time.monotonic() < deadline and "\n" not in line:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line += os.read(proc.stdout.fileno(), 4096).decode()
    match = re.match(r"^interapp agent: listening on (\S+)", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"the agent did not start: {line!r}")
    return proc, match.group(1)


def timed(conn: UnixHTTP, token: str, method: str, path: str, body: Any, n: int,
          expect: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    out = []
    for i in range(n):
        data = None if body is None else json.dumps(body(i)).encode()
        t0 = time.perf_counter()
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        resp.read()
        out.append(time.perf_counter() - t0)
        if resp.status != expect:
            raise SystemExit(f"{method} {path} answered {resp.status}")
    return out


def through_agent(home: Path, env: dict[str, str], n_state: int, n_send: int
                  ) -> tuple[list[float], list[float]]:
    proc, path = start_agent(env)
    try:
        token = (home / "agent.token").read_text().strip()
        conn = UnixHTTP(path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the agent connects chatter on its own
            conn.request("GET", "/agent/v1/state", headers={"Authorization": f"Bearer {token}"})
            state = json.loads(conn.getresponse().read())
            if state["targets"][0]["state"] == "connected":
                break
            time.sleep(0.1)

        def message(i: int) -> dict[str, str]:
            return {"target": "chatter", "to": "bob", "body": f"agent {i}"}

        timed(conn, token, "GET", "/agent/v1/state", None, 200, 200)  # warm-up
        timed(conn, token, "POST", "/agent/v1/messages", message, 20, 201)
        state_times = timed(conn, token, "GET", "/agent/v1/state", None, n_state, 200)
        send_times = timed(conn, token, "POST", "/agent/v1/messages", message, n_send, 201)
        conn.close()
        return state_times, send_times
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse(parser(__doc__, "fewer iterations"), argv)
    n_state, n_send = (300, 100) if args.quick else (3000, 1000)
    tmp = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    clients = {
        "arena": asyncio.run(seed_app(tmp / "arena.db", PW["alice@arena"], ["alice"])),
        "chatter": asyncio.run(seed_app(tmp / "chatter.db", PW["alice@chatter"],
                                        ["alice", "bob"], [(0, 1)]))}
    arena = ThreadedServer("arena", tmp / "arena.db").start()
    chatter = ThreadedServer("chatter", tmp / "chatter.db").start()
    try:
        home = tmp / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")}
        env.update(INTERAPP_HOME=str(home), INTERAPP_VAULT_KEYRING="0",
                   INTERAPP_VAULT_KEY=vault_key())
        asyncio.run(configure(home, env, arena, chatter, clients))
        say(f"in-process façade: {n_send} sends")
        local = asyncio.run(in_process(home, env, n_send))
        say(f"through the agent: {n_state} GET /state, {n_send} sends")
        state, sent = through_agent(home, env, n_state, n_send)
    finally:
        arena.stop()
        chatter.stop()
    rows = [("GET /agent/v1/state (agent)", state), ("send through the agent", sent),
            ("send in-process (façade)", local)]
    ratio = percentile(sent, 50) / percentile(local, 50)
    state_ok = percentile(state, 99) <= 0.002
    lines = ["## Agent", "", f"`bench/agent_bench.py`{' --quick' if args.quick else ''}; "
             f"{machine_line()}. The servers run on threads of the benchmark's process; the "
             "agent in its own; the client is `http.client` on the agent's Unix socket "
             "(keep-alive).", "", "| what | n | p50 | p99 |", "|---|---|---|---|"]
    lines += [f"| {name} | {len(v)} | {fmt_ms(percentile(v, 50))} | "
              f"{fmt_ms(percentile(v, 99))} |" for name, v in rows]
    lines += ["", f"* `state` p99 {fmt_ms(percentile(state, 99))} — target ≤ 2 ms: "
              f"{'met' if state_ok else 'missed'}.",
              f"* a send through the agent is {ratio:.2f} times the in-process send (p50) — "
              f"target ≤ 1.2 times: {'met' if ratio <= 1.2 else 'missed'}."]
    publish("agent-bench", "\n".join(lines), args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
