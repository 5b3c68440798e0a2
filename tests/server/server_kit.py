"""Helpers of the server tests: a real server in a thread, direct database set-up, OAuth calls.

Nothing here mocks the server: ``RunningServer`` runs the real ASGI app under uvicorn on a real
socket bound to 127.0.0.1, and the set-up helpers write through the same ``interapp.server``
functions the admin commands use, on the same database.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import secrets
import select
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import uvicorn
from sqlalchemy.ext.asyncio import AsyncConnection
from websockets.sync.client import ClientConnection, connect

from interapp.cli.server_cmds import bind_socket
from interapp.secret import Secret
from interapp.server import accounts, passwords, social
from interapp.server.app import create_app
from interapp.server.settings import ServerSettings
from interapp.server.storage import Database
from interapp.server.transport import GuardedConfig

T = TypeVar("T")

PASSWORD = "correct horse battery staple"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"

_counter = itertools.count(1)


def uname(prefix: str = "u") -> str:
    """A username unique in this test run."""
    return f"{prefix}{next(_counter)}-{secrets.token_hex(3)}"


def app_name(prefix: str = "t") -> str:
    """An application name unique across test runs (Redis channels are keyed by it)."""
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Endpoint:
    """Where a server answers and which database it uses (any server, thread or process)."""

    url: str
    ws_url: str
    db_url: str


class RunningServer:
    """The real server app under uvicorn, in a background thread, on a free 127.0.0.1 port."""

    def __init__(self, app: str, db_url: str, *, port: int = 0, **overrides: Any) -> None:
        self.sock = bind_socket("127.0.0.1", port)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.db_url = db_url
        overrides.setdefault("issuer", self.url)
        self.settings = ServerSettings(app=app, db_url=db_url, **overrides)
        self.asgi = create_app(self.settings)
        # the connection limits of `interapp serve` (header timeout, header size, JSON errors)
        config = GuardedConfig(self.asgi, log_level="warning", access_log=False, lifespan="on",
                               ws_max_size=64 * 1024)
        self.uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [self.sock]},
                                        name=f"uvicorn-{app}-{self.port}", daemon=True)

    @property
    def issuer(self) -> str:
        return self.settings.issuer

    def start(self) -> RunningServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.uvicorn.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the server on {self.url} did not start")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start within 30 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self._thread.join(timeout=30)
        self.sock.close()
        assert not self._thread.is_alive(), "the server thread did not stop"

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=15, **kwargs)


# --- direct set-up on the database -------------------------------------------------------


def db_run(db_url: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction on ``db_url`` (its own engine, its own event loop)."""

    async def go() -> T:
        database = Database.open(db_url)
        try:
            async with database.begin() as conn:
                return await work(conn)
        finally:
            await database.close()

    return asyncio.run(go())


@dataclass(frozen=True)
class Client:
    """An OAuth client registered on a server."""

    client_id: str
    secret: str | None

    def basic(self) -> httpx.BasicAuth:
        assert self.secret is not None
        return httpx.BasicAuth(self.client_id, self.secret)

    def post_fields(self) -> dict[str, str]:
        fields = {"client_id": self.client_id}
        if self.secret is not None:
            fields["client_secret"] = self.secret
        return fields


def make_client(db_url: str, name: str | None = None, *, public: bool = False) -> Client:
    client_id, secret = db_run(db_url, lambda c: accounts.create_client(
        c, name or uname("client"), public=public))
    return Client(client_id, secret.reveal() if secret else None)


def make_user(db_url: str, username: str | None = None, *, password: str | None = PASSWORD,
              display_name: str | None = None) -> accounts.User:
    name = username or uname()
    hashed = passwords.hash_sync(Secret(password)) if password else None
    return db_run(db_url, lambda c: accounts.create_user(
        c, name, display_name=display_name, password_hash=hashed))


def make_users(db_url: str, count: int, prefix: str = "u", *,
               password: str | None = PASSWORD) -> list[accounts.User]:
    """Several users in one transaction (one password hash shared, to save time)."""
    hashed = passwords.hash_sync(Secret(password)) if password else None

    async def work(conn: AsyncConnection) -> list[accounts.User]:
        return [await accounts.create_user(conn, uname(prefix), password_hash=hashed)
                for _ in range(count)]

    return db_run(db_url, work)


def make_buddies(db_url: str, a: accounts.User, b: accounts.User) -> None:
    async def work(conn: AsyncConnection) -> None:
        await social.make_buddies(conn, a, b)

    db_run(db_url, work)


# --- OAuth and API calls -------------------------------------------------------------------


def password_login(http: httpx.Client, client: Client, username: str,
                   password: str = PASSWORD) -> dict[str, Any]:
    resp = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "password", "username": username, "password": password})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_oauth_error(resp: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """The RFC 6749 §5.2 shape: exactly ``error`` and ``error_description``, JSON, no-store."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert resp.headers.get("cache-control") == "no-store"
    return dict(body)


def assert_api_error(resp: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """The ``/v1`` error shape: exactly ``error`` and ``message``."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error", "message"}, body
    assert body["error"] == error, body
    assert isinstance(body["message"], str) and body["message"]
    return dict(body)


@dataclass
class Session:
    """A logged-in user: username, tokens and an HTTP client carrying the access token."""

    user: accounts.User
    tokens: dict[str, Any]
    http: httpx.Client

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def access(self) -> str:
        return str(self.tokens["access_token"])

    def headers(self) -> dict[str, str]:
        return bearer(self.access)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, headers=self.headers(), **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.post(path, headers=self.headers(), **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.put(path, headers=self.headers(), **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.delete(path, headers=self.headers(), **kw)


def login(server: RunningServer | Endpoint, http: httpx.Client, client: Client,
          user: accounts.User | None = None) -> Session:
    """Create (unless given) a user with the standard password and log them in."""
    user = user or make_user(server.db_url)
    return Session(user, password_login(http, client, user.username), http)


def buddies(server: RunningServer | Endpoint, http: httpx.Client,
            client: Client) -> tuple[Session, Session]:
    """Two new users, logged in and buddies (each has seq 1: ``contact_added``)."""
    a, b = login(server, http, client), login(server, http, client)
    make_buddies(server.db_url, a.user, b.user)
    return a, b


# --- the event stream ------------------------------------------------------------------------


@contextmanager
def stream(server: RunningServer | Endpoint, token: str | None = None, *,
           since: int | str | None = None,
           **query: str) -> Iterator[ClientConnection]:
    """A real WebSocket connection to ``/v1/events`` (token in the Authorization header)."""
    params = dict(query)
    if since is not None:
        params["since"] = str(since)
    url = f"{server.ws_url}/v1/events"
    if params:
        url += "?" + urlencode(params)
    headers = bearer(token) if token else {}
    with connect(url, additional_headers=headers, open_timeout=10, close_timeout=5) as ws:
        yield ws


def next_event(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    """The next JSON frame."""
    frame = ws.recv(timeout=timeout)
    event = json.loads(frame)
    assert isinstance(event, dict), event
    return event


def events(ws: ClientConnection, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    return [next_event(ws, timeout) for _ in range(count)]


def assert_quiet(ws: ClientConnection, wait: float = 0.3) -> None:
    """No frame arrives within ``wait`` seconds."""
    try:
        frame = ws.recv(timeout=wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected frame: {frame!r}")


# --- real `interapp serve` processes ------------------------------------------------------

INTERAPP = str(Path(sys.executable).with_name("interapp"))
SERVING = re.compile(r"^interapp: serving (\S+) on (http://127\.0\.0\.1:(\d+)) \(issuer (\S+)\)$")


class ServeProcess:
    """One ``interapp serve`` subprocess; knows its URL once it has announced it."""

    def __init__(self, proc: subprocess.Popen[str], url: str, issuer: str) -> None:
        self.proc, self.url, self.issuer = proc, url, issuer
        self.ws_url = url.replace("http://", "ws://")


@contextmanager
def serve(app: str, db: str | None, redis_url: str | None, public_url: str | None,
          log: Path, home: Path | None = None,
          extra: tuple[str, ...] = ()) -> Iterator[ServeProcess]:
    """A real ``interapp serve --port 0`` subprocess, ready; stopped by PID (TERM, then KILL)."""
    env = {**os.environ, "INTERAPP_HOME": str(home or log.parent / "home")}
    args = [INTERAPP, "serve", "--app", app, "--port", "0"]
    for flag, value in (("--db", db), ("--redis", redis_url), ("--public-url", public_url)):
        if value is not None:
            args += [flag, value]
    args += list(extra)
    with log.open("w") as errors:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errors,
                                stdin=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline().strip()
                break
            if proc.poll() is not None:
                break
        match = SERVING.match(line)
        assert match, f"no announcement (got {line!r}); stderr: {log.read_text()}"
        assert match.group(1) == app
        assert public_url is None or match.group(4) == public_url
        url = match.group(2)
        while True:  # the socket is bound before start-up completes: wait for readiness
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, f"the server exited; stderr: {log.read_text()}"
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.05)
        yield ServeProcess(proc, url, match.group(4))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --- watching a server process from outside ------------------------------------------------


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def metric(url: str, name: str) -> float:
    """The value of the unlabelled Prometheus sample ``name`` on ``url``'s ``/metrics``."""
    resp = httpx.get(f"{url}/metrics", timeout=10)
    assert resp.status_code == 200, resp.text
    for line in resp.text.splitlines():
        sample, _, value = line.partition(" ")
        if sample == name:
            return float(value)
    raise AssertionError(f"no sample {name} on {url}/metrics")


# --- fault tests: workers, sockets and a real plug-in receiving -------------------------------


def worker_pids(url: str, count: int, timeout: float = 30) -> set[int]:
    """The PIDs of ``count`` workers behind ``url``, from ``X-Interapp-Worker`` of ``/healthz``.

    Each probe opens a new connection, so the kernel hands it to any worker.
    """
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only workers {seen} answered"
        with httpx.Client(base_url=url, timeout=5) as http:
            seen.add(int(http.get("/healthz").headers["x-interapp-worker"]))
    return seen


def established_peers(pid: int, port: int) -> set[int]:
    """Client ports of the ESTABLISHED IPv4 TCP connections that ``pid`` holds on ``port``.

    Read from ``/proc``: the socket inodes among the process's file descriptors, matched with
    the kernel's connection table.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if state == "01" and inode in inodes and int(local.split(":")[1], 16) == port:
            peers.add(int(remote.split(":")[1], 16))
    return peers


def client_on_worker(url: str, pid: int, tries: int = 60) -> httpx.Client:
    """A keep-alive HTTP client whose connection was accepted by worker ``pid``."""
    for _ in range(tries):
        http = httpx.Client(base_url=url, timeout=10)
        if int(http.get("/healthz").headers["x-interapp-worker"]) == pid:
            return http
        http.close()
    raise AssertionError(f"worker {pid} accepted none of {tries} connections")


class PluginReceiver:
    """The real ``interapp`` plug-in logged in as one user, consuming its event stream.

    It runs on a thread with its own event loop and, like the host's runtime, opens the plug-in's
    ``events(cursor)`` again after every :class:`ConnectionLost`, resuming from the last cursor
    it received. ``since="0"`` replays the account's whole event log first.
    """

    def __init__(self, url: str, client: Client, username: str, *, since: str = "0") -> None:
        self.url, self.client, self.username = url, client, username
        self.cursor = since
        self.events: list[dict[str, Any]] = []
        self.received_at: dict[int, float] = {}  # seq -> time.monotonic() of its arrival
        self.drops: list[str] = []  # why each stream ended (ConnectionLost messages)
        self.failures: list[str] = []  # anything else the plug-in raised
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._current: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name=f"receiver-{username}", daemon=True)

    def messages(self) -> list[dict[str, Any]]:
        """The ``message`` events received so far."""
        return [e for e in list(self.events) if e["type"] == "message"]

    def wait_messages(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Wait until at least ``count`` messages arrived (or fail after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while len(got := self.messages()) < count:
            assert self._thread.is_alive(), f"the receiver stopped: {self.failures}"
            assert time.monotonic() < deadline, f"{len(got)} of {count} messages arrived"
            time.sleep(0.02)
        return got

    def start(self) -> PluginReceiver:
        self._thread.start()
        assert self.connected.wait(30), f"the stream did not open: {self.failures}"
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the receiver did not stop"

    def reconnect(self) -> None:
        """Drop the current stream, as a network failure would; it is opened again at once."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(lambda: self._current and self._current.cancel())

    async def _main(self) -> None:
        from interapp.plugins.contract import TargetConfig
        from interapp.plugins.interapp_server.client import InterappPlugin

        self._loop = asyncio.get_running_loop()
        plugin = InterappPlugin(TargetConfig(
            name="receiver", plugin="interapp", server=self.url, client_id=self.client.client_id,
            client_secret=Secret(self.client.secret) if self.client.secret else None))
        try:
            await plugin.login({"username": self.username, "password": Secret(PASSWORD)})
            consumer = asyncio.create_task(self._consume(plugin))
            while not self._stop.is_set() and not consumer.done():
                await asyncio.sleep(0.05)
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
        except Exception as exc:
            self.failures.append(repr(exc))
            raise
        finally:
            await plugin.close()

    async def _consume(self, plugin: Any) -> None:
        from interapp.errors import ConnectionLost, InterappError

        async def one_stream() -> None:
            async for event in plugin.events(self.cursor):
                self.connected.set()
                self.cursor = event.cursor
                self.received_at[int(event.cursor)] = time.monotonic()
                self.events.append(event.data)

        while True:
            self._current = asyncio.create_task(one_stream())
            try:
                await self._current
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the receiver itself is stopping
                self.drops.append("dropped by reconnect()")
            except ConnectionLost as exc:
                self.drops.append(exc.message)
            except InterappError as exc:
                self.failures.append(repr(exc))
            await asyncio.sleep(0.2)
