"""Running the UI server: bind (loopback only unless told otherwise), print the URL, open it.

Theory of operation: :func:`serve` first reaches the agent of the data folder — the one that
runs, or one it starts in this process (so a vault passphrase, if one is needed, is asked on
the terminal before anything else; :class:`~interapp.web.agentlink.AgentLink`) — binds the socket,
makes the launch secret for that port, and runs uvicorn with its access log *off* — the first
URL carries the launch secret and must not land in a log. Once the server answers it prints the
URL and, when asked and a display exists, opens it in the default browser. The URL opens the UI
once: a line on standard input (Enter in the terminal) or ``SIGUSR1`` prints a fresh one-time
URL (:meth:`~interapp.web.security.Sessions.new_link`). Standard input is read on a daemon
thread, so an idle terminal never holds up the shutdown. SIGTERM and Ctrl+C stop the UI server
and then the agent it started (presence offline, cursors saved); an agent it reused keeps
running.
"""

from __future__ import annotations

import asyncio
import getpass
import ipaddress
import os
import signal
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from interapp.host import ConfigError
from interapp.web.agentlink import AgentLink
from interapp.web.app import create_app
from interapp.web.security import Sessions

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def has_display(env: Mapping[str, str]) -> bool:
    """True when a browser window could be shown."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # → TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(128)
    return sock


def url_host(host: str) -> str:
    """``host`` as it goes in a URL."""
    bare = host.strip("[]")
    return f"[{bare}]" if ":" in bare else bare


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: :func:`serve` stops in order (the UI, then
    the agent it started), and uvicorn would raise the signal again once it is done."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(home: Path, *, host: str = "127.0.0.1", port: int = 0,
                open_browser: bool = True, env: Mapping[str, str] | None = None,
                interactive: bool = False,
                announce: Callable[[str], None] | None = None) -> None:
    """Serve the web UI until interrupted."""
    env = os.environ if env is None else env

    def passphrase() -> str:
        return getpass.getpass("Vault passphrase: ", stream=sys.stderr)

    # reached first: a vault passphrase, if one is needed, is asked before serving
    agent = AgentLink(home, env=env, passphrase=passphrase if interactive else None,
                      announce=_say)
    try:
        await agent.start()
        await _serve(agent, host, port, open_browser, env, announce)
    finally:
        await agent.aclose()  # the agent it started stops now, cleanly
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _serve(agent: AgentLink, host: str, port: int, open_browser: bool,
                 env: Mapping[str, str], announce: Callable[[str], None] | None) -> None:
    sock = bind(host, port)
    actual = int(sock.getsockname()[1])
    sessions = Sessions(port=actual)
    names = {*LOOPBACK_NAMES, url_host(host)}
    app = create_app(agent, sessions, allowed_hosts=tuple(names))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            ws_max_size=1 << 20, timeout_graceful_shutdown=5)
    server = _Server(config)
    base = f"http://{url_host(host)}:{actual}/?k="
    url = base + sessions.launch_secret
    loop = asyncio.get_running_loop()

    def fresh() -> None:
        (announce or _print_again)(base + sessions.new_link())

    def stop() -> None:
        server.should_exit = True

    async def tell() -> None:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for this
            await asyncio.sleep(0.02)
        (announce or _print)(url)
        _offer_fresh_links(loop, fresh)
        if open_browser and has_display(env):
            await asyncio.to_thread(webbrowser.open, url)

    for sig in (signal.SIGTERM, signal.SIGINT):  # removed by serve(), once the agent stopped
        loop.add_signal_handler(sig, stop)
    teller = asyncio.create_task(tell())
    try:
        await server.serve(sockets=[sock])
    finally:
        teller.cancel()
        sock.close()


def _offer_fresh_links(loop: asyncio.AbstractEventLoop, fresh: Callable[[], None]) -> None:
    """Call ``fresh`` on the loop for every line read from stdin, and on SIGUSR1."""
    if hasattr(signal, "SIGUSR1"):
        loop.add_signal_handler(signal.SIGUSR1, fresh)

    def read() -> None:
        try:
            while sys.stdin is not None and sys.stdin.readline():
                loop.call_soon_threadsafe(fresh)
        except (OSError, ValueError, RuntimeError):  # stdin closed, or the loop has stopped
            return

    threading.Thread(target=read, name="interapp-ui-stdin", daemon=True).start()


def _print(url: str) -> None:
    sys.stdout.write(f"interapp ui: open {url}\n"
                     "interapp ui: the address opens the UI once, within 15 minutes; press "
                     "Enter here (or send SIGUSR1) for a new one; Ctrl+C stops\n")
    sys.stdout.flush()


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _print_again(url: str) -> None:
    sys.stdout.write(f"interapp ui: open {url}\n")
    sys.stdout.flush()
