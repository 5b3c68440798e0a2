"""Running the agent: the sockets, the files it leaves in the data folder, a clean stop.

Theory of operation: :func:`run` opens the host on the data folder (a vault passphrase, if
one is needed, is asked first), opens the event log, binds the Unix socket (``agent.sock``,
mode 0600, created under a 0177 umask so it is never reachable by others, not even for an
instant) and, with ``--port``, 127.0.0.1:PORT. It writes ``agent.token`` (this run's token for
the user's own command line, 0600) and then ``agent.json`` (pid, start time, where it listens:
``interapp agent status`` and the CLI read it), and serves until SIGTERM or SIGINT. Then it
stops taking requests, sets presence offline on the connected targets, saves the stream
cursors and removes its files; the next start resumes every stream from where this one left
off, and the event log keeps its ``seq``. :func:`serving` is the same as a context manager
(the agent serves while the block runs): ``interapp ui`` embeds the agent that way when none
runs for its data folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn

from interapp.agent.api import create_app
from interapp.agent.core import Agent
from interapp.agent.eventlog import EventLog
from interapp.agent.tokens import CLI_TOKEN_FILE, TokenStore, new_token, write_private
from interapp.host import ConfigError, Host

STATUS_FILE = "agent.json"
SOCKET_FILE = "agent.sock"
LOG_FILE = "agent-events.db"
MAX_UNIX_PATH = 104  # sun_path is 104 bytes on macOS, 108 on Linux


def socket_path(home: Path, given: Path | None = None) -> Path:
    """Where the agent of ``home`` listens."""
    return given if given is not None else home / SOCKET_FILE


def bind_unix(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600 from the start."""
    if len(os.fsencode(path)) >= MAX_UNIX_PATH:
        raise ConfigError(f"the socket path {path} is too long for a Unix socket; "
                          "use --socket with a shorter one")
    with contextlib.suppress(FileNotFoundError):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # left behind by an agent that was killed
        else:
            raise ConfigError(f"an agent already listens on {path} "
                              "('interapp agent status' says which)")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def bind_loopback(port: int) -> socket.socket:
    """A listening TCP socket on 127.0.0.1:``port`` (0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from exc
    sock.listen(128)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the agent stops itself, in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True)
class Running:
    """An agent serving in this process (see :func:`serving`)."""

    agent: Agent
    socket: Path
    token: str
    """This run's token for the user's own programs (the one in ``agent.token``)."""
    port: int | None
    status: dict[str, Any]
    serving: asyncio.Task[None]
    """The server task: done when the server stopped on its own."""


@contextlib.asynccontextmanager
async def serving(home: Path, *, socket_file: Path | None = None, port: int | None = None,
                  allowed_origins: tuple[str, ...] = (), env: Mapping[str, str] | None = None,
                  passphrase: Callable[[], str] | None = None,
                  announce: Callable[[dict[str, Any]], None] | None = None
                  ) -> AsyncIterator[Running]:
    """The agent of ``home``, serving while the block runs (``interapp ui`` embeds it this
    way); leaving the block stops it cleanly, as SIGTERM stops :func:`run`."""
    env = os.environ if env is None else env
    path = socket_path(home, socket_file)
    unix = bind_unix(path)
    tcp = bind_loopback(port) if port is not None else None
    files = [path, home / CLI_TOKEN_FILE, home / STATUS_FILE]
    try:
        host = await Host.open(home, env=env, passphrase=passphrase)
        log = await EventLog(home / LOG_FILE).open()
        store = TokenStore(home)
        await asyncio.to_thread(store.refresh)
        cli_token = new_token()
        await asyncio.to_thread(write_private, home / CLI_TOKEN_FILE, cli_token + "\n")

        last_read = [time.monotonic()]

        async def check(token: str) -> str | None:
            if hmac.compare_digest(token.encode(), cli_token.encode()):
                return "cli"
            name = store.check(token)
            if name is None and time.monotonic() - last_read[0] > 0.5:  # a token made just now
                last_read[0] = time.monotonic()
                await asyncio.to_thread(store.refresh)
                name = store.check(token)
            return name

        async def refresh_tokens() -> None:
            await asyncio.to_thread(store.refresh)

        agent = Agent(host, log, refresh_tokens=refresh_tokens)
        tcp_port = int(tcp.getsockname()[1]) if tcp is not None else None
        origins = {*allowed_origins}
        if tcp_port is not None:
            origins |= {f"http://127.0.0.1:{tcp_port}", f"http://localhost:{tcp_port}"}
        app = create_app(agent, check, allowed_origins=tuple(origins))
        # no proxy stands in front of a local agent, so X-Forwarded-* is never to be believed
        # (and uvicorn's middleware for it is one layer less per request); nor does a local
        # client need to be told the server's name
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                ws_max_size=1 << 20, timeout_graceful_shutdown=5,
                                proxy_headers=False, server_header=False)
        server = _Server(config)
        await agent.start()
        status = {"pid": os.getpid(), "started_at": agent.started_at.isoformat(),
                  "socket": str(path), "port": tcp_port, "home": str(home)}
        task = asyncio.create_task(
            server.serve(sockets=[s for s in (unix, tcp) if s is not None]), name="agent-serve")
        try:
            while not server.started:  # uvicorn offers no event for this
                if task.done():
                    task.result()
                    raise ConfigError("the agent stopped while starting")
                await asyncio.sleep(0.02)
            await asyncio.to_thread(write_private, home / STATUS_FILE, json.dumps(status))
            (announce or _print)(status)
            yield Running(agent, path, cli_token, tcp_port, status, task)
        finally:
            server.should_exit = True
            await asyncio.gather(task, return_exceptions=True)
            await agent.stop()
    finally:
        unix.close()
        if tcp is not None:
            tcp.close()
        for f in files:
            f.unlink(missing_ok=True)


async def run(home: Path, *, socket_file: Path | None = None, port: int | None = None,
              allowed_origins: tuple[str, ...] = (), env: Mapping[str, str] | None = None,
              passphrase: Callable[[], str] | None = None,
              announce: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Serve the agent of ``home`` until SIGTERM/SIGINT (see the module docstring)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)

    def ready(status: dict[str, Any]) -> None:
        for sig in signals:  # once started (Ctrl+C at a passphrase prompt still interrupts),
            loop.add_signal_handler(sig, stop.set)  # before anyone is told it listens
        (announce or _print)(status)

    try:
        async with serving(home, socket_file=socket_file, port=port,
                           allowed_origins=allowed_origins, env=env, passphrase=passphrase,
                           announce=ready) as running:
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({stopping, running.serving},
                               return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def read_status(home: Path) -> dict[str, Any] | None:
    """What ``agent.json`` says (None when there is no agent file)."""
    try:
        data = json.loads((home / STATUS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _print(status: dict[str, Any]) -> None:
    where = status["socket"] + (f" and http://127.0.0.1:{status['port']}"
                                if status["port"] else "")
    started = datetime.fromisoformat(status["started_at"]).astimezone(UTC)
    sys.stdout.write(f"interapp agent: listening on {where} (pid {status['pid']}, since "
                     f"{started:%Y-%m-%d %H:%M:%S} UTC)\n")
    sys.stdout.flush()
