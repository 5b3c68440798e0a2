"""Helpers of ``bench/compare_streams.py``: a cheap WebSocket event-stream client, seeding,
stream-to-worker mapping, CPU accounting over process trees and a private Redis.

The event-stream client is an :class:`asyncio.Protocol` rather than a ``websockets`` connection
with a reader task: ten thousand of them must fit in the load generator next to the server on
a 2-core machine. It speaks just enough RFC 6455 for ``/v1/events``: the upgrade handshake
(optionally offering ``permessage-deflate``, as browsers do), unmasked text frames from the
server, pings (answered with masked pongs, so uvicorn's 20-s keep-alive never drops a stream)
and close frames.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit import descendants, seeding

HOST = "127.0.0.1"
perf = time.perf_counter

OnEvent = Callable[["WsStream", dict[str, Any], float], None]


# --------------------------------------------------------------------------- limits


def raise_nofile(want: int) -> int:
    """Raise this process's open-file limit (inherited by the servers it starts); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, want)
    with contextlib.suppress(ValueError, OSError):  # raising the hard limit needs root
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
        return target
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------- event streams


class WsStream(asyncio.Protocol):
    """One ``/v1/events`` WebSocket, driven by callbacks (no task per stream)."""

    def __init__(self, port: int, token: str, on_event: OnEvent, *, deflate: bool = False,
                 label: str = "") -> None:
        self.port, self.token, self.on_event, self.deflate, self.label = (
            port, token, on_event, deflate, label)
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None  # an asyncio or uvloop transport
        self.buf = bytearray()
        self.upgraded = False
        self.closed = False
        self.close_reason = ""
        self.events = 0
        self.compressed = False
        self._inflate: Any = None
        self.local_port = 0

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.local_port = sock.getsockname()[1]
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        lines = ["GET /v1/events HTTP/1.1", f"Host: {HOST}:{self.port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13", f"Authorization: Bearer {self.token}"]
        if self.deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[:end + 4]
            if not head.startswith("HTTP/1.1 101"):
                self._fail(f"handshake answered {head.split(chr(13))[0][:60]!r}")
                return
            self.upgraded = True
            self.compressed = "permessage-deflate" in head.lower()
            if self.compressed:
                self._inflate = zlib.decompressobj(-15)
            if not self.opened.done():
                self.opened.set_result(None)
        self._frames()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.close_reason:
            self.close_reason = f"connection lost ({type(exc).__name__})" if exc else "closed"
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(self.close_reason))

    # -- frames
    def _frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            opcode, rsv1, size, offset = buf[0] & 0x0F, buf[0] & 0x40, buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    return
                size, offset = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if len(buf) < 10:
                    return
                size, offset = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < offset + size:
                return
            payload = bytes(buf[offset:offset + size])
            del buf[:offset + size]
            if opcode == 0x1:
                self._text(payload, bool(rsv1))
            elif opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.close_reason = f"closed by the server ({code} {payload[2:60]!r})"
                self.close()
                return

    def _text(self, payload: bytes, compressed: bool) -> None:
        now = perf()
        if compressed and self._inflate is not None:
            payload = self._inflate.decompress(payload + b"\x00\x00\xff\xff")
        event = json.loads(payload)
        if event.get("type") == "error":
            self.close_reason = f"refused: {event.get('message', event)}"
            return
        self.events += 1
        self.on_event(self, event, now)

    def _send(self, opcode: int, payload: bytes) -> None:
        """A masked client frame (payloads here are < 126 bytes)."""
        if self.transport is None or self.transport.is_closing():
            return
        mask = secrets.token_bytes(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def _fail(self, reason: str) -> None:
        self.close_reason = reason
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        """Send a close frame (1000) and drop the connection."""
        if self.transport is not None and not self.transport.is_closing():
            if self.upgraded:
                self._send(0x8, (1000).to_bytes(2, "big"))
            self.transport.close()
        self.closed = True

    @property
    def alive(self) -> bool:
        """Connected and not refused."""
        return self.upgraded and not self.closed and not self.close_reason


@dataclass
class OpenReport:
    """How opening a batch of streams went."""

    opened: int = 0
    seconds: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.opened / self.seconds if self.seconds else 0.0


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, exc.errno)} ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "timeout (no 101 within 30 s)"
    return f"{type(exc).__name__}: {str(exc)[:80]}"


async def open_streams(port: int, tokens: list[str], count: int, on_event: OnEvent, *,
                       into: list[WsStream], deflate: bool = False, concurrency: int = 64,
                       tick: Callable[[int], None] | None = None, give_up_after: int = 200,
                       start_index: int = 0) -> OpenReport:
    """Open ``count`` streams (stream ``i`` uses ``tokens[i % len(tokens)]``) into ``into``.

    At most ``concurrency`` handshakes are in flight. Stops early after ``give_up_after``
    failures (the reason of each is counted in the report).
    """
    loop = asyncio.get_running_loop()
    report = OpenReport()
    gate = asyncio.Semaphore(concurrency)
    t0 = perf()

    async def one(i: int) -> None:
        if sum(report.failures.values()) >= give_up_after:
            return
        async with gate:
            token = tokens[i % len(tokens)]
            try:
                _, proto = await asyncio.wait_for(loop.create_connection(
                    lambda: WsStream(port, token, on_event, deflate=deflate, label=str(i)),
                    HOST, port), 30)
                await asyncio.wait_for(proto.opened, 30)
            except (OSError, TimeoutError, ConnectionError) as exc:
                report.failures[_why(exc)] += 1
                return
            into.append(proto)
            report.opened += 1
            if tick is not None:
                tick(1)

    await asyncio.gather(*(one(start_index + i) for i in range(count)))
    report.seconds = perf() - t0
    return report


class Arrivals:
    """Arrival times of events by tag (a presence ``status_text`` or a ``client_msg_id``)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self._waiting: dict[str, tuple[int, asyncio.Future[None]]] = {}

    def on_event(self, _stream: WsStream, event: dict[str, Any], now: float) -> None:
        """The ``on_event`` callback for :class:`WsStream`."""
        tag = event.get("client_msg_id") or event.get("status_text")
        if not tag:
            return
        got = self.times.setdefault(tag, [])
        got.append(now)
        waiting = self._waiting.get(tag)
        if waiting is not None and len(got) >= waiting[0] and not waiting[1].done():
            waiting[1].set_result(None)

    def expect(self, tag: str, count: int) -> asyncio.Future[None]:
        """A future done once ``count`` streams received the event tagged ``tag``."""
        fut = asyncio.get_running_loop().create_future()
        self._waiting[tag] = (count, fut)
        if len(self.times.get(tag, ())) >= count:
            fut.set_result(None)
        return fut

    def forget(self, tag: str) -> list[float]:
        """Stop waiting for ``tag``; return its arrival times."""
        self._waiting.pop(tag, None)
        return self.times.pop(tag, [])


# --------------------------------------------------------------------------- which worker


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    out.add(int(target[8:-1]))
    return out


def peer_owner(port: int, pids: list[int]) -> dict[int, int]:
    """For each established connection to ``port``: the client's port → the server pid."""
    owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    out: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
                if state == "01" and int(local.rsplit(":", 1)[1], 16) == port and inode in owner:
                    out[int(remote.rsplit(":", 1)[1], 16)] = owner[inode]
    return out


def spread(port: int, pids: list[int], client_ports: list[int]) -> dict[int, int]:
    """How many of ``client_ports``' connections each server pid holds."""
    owner = peer_owner(port, pids)
    counts = dict.fromkeys(pids, 0)
    for cport in client_ports:
        pid = owner.get(cport)
        if pid is not None:
            counts[pid] += 1
    return counts


def worker_pids(pid: int) -> list[int]:
    """The processes that serve requests: the workers of a supervisor, else ``pid`` itself."""
    kids = [p for p in descendants(pid) if _is_python(p)]
    return kids or [pid]


def _is_python(pid: int) -> bool:
    with contextlib.suppress(OSError):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        return b"python" in cmd and b"resource_tracker" not in cmd
    return False


# --------------------------------------------------------------------------- Redis


@contextlib.contextmanager
def private_redis(fallback: str) -> Iterator[tuple[str, str]]:
    """A throw-away ``redis-server`` on a free port (no persistence); ``fallback`` without one.

    Yields ``(url, description)``.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        yield fallback, f"the shared Redis at {fallback}"
        return
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", HOST, "--save", "",
                             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.05)
        yield f"redis://{HOST}:{port}/0", f"a private redis-server on port {port} (no persistence)"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# --------------------------------------------------------------------------- seeding


@dataclass
class Accounts:
    """Seeded accounts and their access tokens."""

    hub_token: str
    member_tokens: list[str]  # buddies of the hub: m00000, m00001, …
    pairs: list[tuple[str, str, str, str]]  # (sender, sender token, receiver, receiver token)


async def seed_accounts(db_url: str, *, members: int, pairs: int) -> Accounts:
    """Create ``hub`` with ``members`` buddies, and ``pairs`` sender/receiver buddy pairs, each
    with a 4-hour access token (straight into the database; nobody logs in)."""
    async with seeding(db_url) as sd:
        cid, _ = await sd.client("compare-streams", public=True)

        async def token(user: Any) -> str:
            return str((await sd.tokens(user.id, cid))["access_token"])

        hub = await sd.user("hub")
        member_tokens = []
        for i in range(members):
            member = await sd.user(f"m{i:05d}")
            await sd.buddies(hub, member)
            member_tokens.append(await token(member))
        pair_rows = []
        for i in range(pairs):
            a, b = await sd.user(f"ps{i:02d}"), await sd.user(f"pr{i:02d}")
            await sd.buddies(a, b)
            pair_rows.append((a.username, await token(a), b.username, await token(b)))
        hub_token = await token(hub)
    return Accounts(hub_token, member_tokens, pair_rows)
