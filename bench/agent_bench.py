"""Benchmark of ``interapp agent`` (issue 13): the local API's round trip, and a send through
the agent against the same send through the in-process façade, side by side in one run.

    .venv/bin/python bench/agent_bench.py [--quick] [--write | --no-write]

The target, ``chatter``, is a real ``interapp serve`` process (SQLite, one worker), as in
``facade_bench.py``: an application talks to its servers over the network, and a server on a
thread here would share this process's GIL with the in-process host; the local application
(``arena``, idle while measuring) runs on a thread of this process. Two data folders are
configured and linked to chatter through the prompt, as ``interapp`` would: one for alice,
used in-process, one for carol, served by ``interapp agent`` in its own process. Both send
to bob, so each gets only its own echoes. Then, in one asyncio loop of this process:

1. ``GET /agent/v1/state`` M times — p50/p99;
2. N rounds of one in-process send (``host.send``, with an event listener as an application
   has) *and* one send through the agent (``POST /agent/v1/messages``), alternating, so that
   both see the same machine at the same moment — p50/p99 of each and their ratio.

The rounds run twice: with this process on the default asyncio loop (what ``asyncio.run``
gives an embedding application) and on uvloop. The agent itself runs on uvloop (see
``interapp.cli.agent_cmds``). The client of the agent is a keep-alive HTTP/1.1 connection on
its Unix socket (the kit's raw client, ``loadkit.HttpConn``), so that it adds as little as
possible.

Targets: ``state`` p99 ≤ 2 ms; a send through the agent ≤ 1.2 times the in-process send (p50,
default loop). The results are printed and, with ``--write`` (the default for a full run),
written as the ``agent-bench`` block of ``docs/performance.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import uvloop
from benchkit import (
    fmt_ms,
    machine_line,
    parse,
    parser,
    percentile,
    publish,
    say,
    seed_app,
    serve,
    vault_key,
)
from loadkit import HttpConn, bearer, build

from interapp.host import Host, Scripted, events
from interapp.testing.servers import ThreadedServer

PW = {"arena": "arena-bench-pw", "chatter": "chatter-bench-pw"}


class AgentConn:
    """One keep-alive HTTP/1.1 connection to the agent's Unix socket (the kit's raw client:
    a general one such as httpx costs more per request than the agent's ``state`` answer,
    and it must share the loop with the in-process host of the side-by-side rounds)."""

    def __init__(self, path: str, token: str) -> None:
        self.conn = HttpConn(0, uds=path)
        self.headers = bearer(token, json_body=True)

    async def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        """The status and body of one request."""
        data = b"" if body is None else json.dumps(body).encode()
        return await self.conn.request(build(method, path, 0, self.headers, data))

    async def timed(self, method: str, path: str, body: object, expect: int) -> float:
        """One request's round trip in seconds (an unexpected status stops the benchmark)."""
        t0 = time.perf_counter()
        status, answer = await self.request(method, path, body)
        took = time.perf_counter() - t0
        if status != expect:
            raise SystemExit(f"{method} {path} answered {status}: {answer[:200]!r}")
        return took

    def close(self) -> None:
        self.conn.close()


Clients = dict[str, tuple[str, str]]


async def seed(tmp: Path) -> Clients:
    """alice and carol on both servers, bob on chatter (a buddy of both); each server's OAuth
    client, which both data folders use."""
    return {"arena": await seed_app(tmp / "arena.db", PW["arena"], ["alice", "carol"]),
            "chatter": await seed_app(tmp / "chatter.db", PW["chatter"],
                                      ["alice", "carol", "bob"], [(0, 2), (1, 2)])}


def environment(home: Path) -> dict[str, str]:
    """The environment of a data folder of its own (file vault, a fresh key)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")}
    env.update(INTERAPP_HOME=str(home), INTERAPP_VAULT_KEYRING="0", INTERAPP_VAULT_KEY=vault_key())
    return env


async def configure(user: str, env: dict[str, str], arena_url: str, chatter_url: str,
                    clients: Clients) -> None:
    """Set the local app, sign ``user`` in, add chatter and link it through the prompt."""
    acid, asecret = clients["arena"]
    ccid, csecret = clients["chatter"]
    async with Host.open(Path(env["INTERAPP_HOME"]), env=env) as host:
        await host.set_local(arena_url, client_id=acid, client_secret=asecret)
        await host.sign_in(user, PW["arena"])
        await host.add_target("chatter", plugin="interapp", server=chatter_url,
                              client_id=ccid, client_secret=csecret)
        await host.connect("chatter", Scripted({"username": user,
                                                "password": PW["chatter"]}))


def start_agent(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """``interapp agent`` on the folder of ``env``; its process and socket path."""
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


async def side_by_side(local_env: dict[str, str], socket: str, token: str, n_state: int,
                       n_send: int) -> dict[str, list[float]]:
    """``state`` round trips, then alternating in-process and agent sends."""
    agent = AgentConn(socket, token)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the agent connects chatter on its own
        _, body = await agent.request("GET", "/agent/v1/state")
        if json.loads(body)["targets"][0]["state"] == "connected":
            break
        await asyncio.sleep(0.1)
    async with Host.open(Path(local_env["INTERAPP_HOME"]), env=local_env) as host:
        await host.connect("chatter")
        seen: list[object] = []
        off = host.on(events.Event, seen.append)  # as an application does (so the agent)
        await asyncio.sleep(1.0)  # the stream is open

        async def in_process(i: int) -> float:
            t0 = time.perf_counter()
            await host.send("chatter", "bob", f"in-process {i}")
            return time.perf_counter() - t0

        async def through_agent(i: int) -> float:
            return await agent.timed("POST", "/agent/v1/messages",
                                     {"target": "chatter", "to": "bob", "body": f"agent {i}"},
                                     201)

        for i in range(20):  # warm-up
            await in_process(i)
            await through_agent(i)
        for _ in range(200):
            await agent.timed("GET", "/agent/v1/state", None, 200)
        out: dict[str, list[float]] = {"state": [], "agent": [], "local": []}
        for _ in range(n_state):
            out["state"].append(await agent.timed("GET", "/agent/v1/state", None, 200))
        for i in range(n_send):
            first, second = (in_process, through_agent) if i % 2 else (through_agent, in_process)
            out["local" if first is in_process else "agent"].append(await first(i))
            out["local" if second is in_process else "agent"].append(await second(i))
        off()
    agent.close()
    return out


def report(quick: bool, runs: dict[str, dict[str, list[float]]]) -> str:
    """The markdown block."""
    lines = ["## Agent", "", f"`bench/agent_bench.py`{' --quick' if quick else ''}; "
             f"{machine_line()}. chatter is an `interapp serve` process (SQLite), arena a thread "
             "of the benchmark's process, the agent (on uvloop) a process of its own; the "
             "client is a keep-alive HTTP/1.1 connection on the agent's Unix socket. Sends "
             "through the agent and in-process alternate, one "
             "each per round, in one loop of the benchmark's process: first on the default "
             "asyncio loop, then on uvloop.", "",
             "| what | n | p50 | p99 |", "|---|---|---|---|"]
    ratios = {}
    for loop, got in runs.items():
        lines += [f"| GET /agent/v1/state (client on {loop}) | {len(got['state'])} | "
                  f"{fmt_ms(percentile(got['state'], 50))} | "
                  f"{fmt_ms(percentile(got['state'], 99))} |"]
        for key, name in (("agent", f"send through the agent (client on {loop})"),
                          ("local", f"send in-process (façade on {loop})")):
            lines += [f"| {name} | {len(got[key])} | {fmt_ms(percentile(got[key], 50))} | "
                      f"{fmt_ms(percentile(got[key], 99))} |"]
        ratios[loop] = percentile(got["agent"], 50) / percentile(got["local"], 50)
    state99 = max(percentile(got["state"], 99) for got in runs.values())
    default = ratios["asyncio"]
    lines += ["", f"* `state` p99 {fmt_ms(state99)} (the worse of the two runs) — target "
              f"≤ 2 ms: {'met' if state99 <= 0.002 else 'missed'}.",
              f"* a send through the agent is {default:.2f} times the in-process send on the "
              f"default loop (p50) — target ≤ 1.2 times: "
              f"{'met' if default <= 1.2 else 'missed'}; against an in-process façade on "
              f"uvloop it is {ratios['uvloop']:.2f} times."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print (and write) the block."""
    args = parse(parser(__doc__, "fewer iterations"), argv)
    n_state, n_send = (300, 100) if args.quick else (3000, 1000)
    tmp = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    clients = asyncio.run(seed(tmp))
    arena = ThreadedServer("arena", tmp / "arena.db").start()
    chatter = serve("chatter", tmp / "chatter.db", tmp)
    runs: dict[str, dict[str, list[float]]] = {}
    try:
        local_env, agent_env = environment(tmp / "local"), environment(tmp / "agent")
        for user, env in (("alice", local_env), ("carol", agent_env)):
            asyncio.run(configure(user, env, arena.url, chatter.url, clients))
        proc, socket = start_agent(agent_env)
        try:
            token = (tmp / "agent" / "agent.token").read_text().strip()
            loops: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {
                "asyncio": None, "uvloop": uvloop.new_event_loop}
            for loop, factory in loops.items():
                say(f"on {loop}: {n_state} GET /state, {n_send} sends each way, alternating")
                with asyncio.Runner(loop_factory=factory) as runner:
                    runs[loop] = runner.run(side_by_side(local_env, socket, token,
                                                         n_state, n_send))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    finally:
        arena.stop()
        chatter.stop()
    publish("agent-bench", report(args.quick, runs), args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
