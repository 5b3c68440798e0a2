"""Load generation for the server benchmarks: a raw HTTP/1.1 keep-alive client, closed- and
open-loop drivers, and a cheap ``/v1/events`` WebSocket client.

The clients are much cheaper per request than httpx or ``websockets`` (so that a 2-core
machine's CPU goes to the server): requests are pre-built bytes, and each event stream is an
:class:`asyncio.Protocol` driven by callbacks, no task per stream.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import re
import secrets
import socket
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from benchkit import CpuMeter, percentile

HOST = "127.0.0.1"
perf = time.perf_counter

# --------------------------------------------------------------------------- raw HTTP client

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)


class HttpConn:
    """One HTTP/1.1 keep-alive connection to 127.0.0.1, opened on first use."""

    def __init__(self, port: int, *, uds: str | None = None) -> None:
        """``uds``: a Unix socket's path instead (the agent's), ``port`` then unused."""
        self.port = port
        self.uds = uds
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send a request built by :func:`build`; its status and body."""
        if self.writer is None:
            if self.uds is not None:
                self.reader, self.writer = await asyncio.open_unix_connection(self.uds)
            else:
                self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
                sock = self.writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        try:
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            match = _CONTENT_LENGTH.search(head)
            if match:
                body = await self.reader.readexactly(int(match.group(1)))
            elif _CHUNKED.search(head):
                body = await self._chunked()
            else:
                body = b""
            if _CLOSE.search(head):
                self.close()
            return status, body
        except BaseException:
            self.close()
            raise

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await self.reader.readexactly(size + 2))
            if size == 0:
                return b"".join(p[:-2] for p in parts)

    @property
    def local_port(self) -> int:
        """The client side's port (0 before the first request)."""
        return self.writer.get_extra_info("sockname")[1] if self.writer else 0

    def close(self) -> None:
        """Drop the connection (the next request opens a new one)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def request_once(port: int, raw: bytes) -> tuple[int, bytes]:
    """One request on a connection of its own."""
    conn = HttpConn(port)
    try:
        return await conn.request(raw)
    finally:
        conn.close()


def build(method: str, path: str, port: int, headers: dict[str, str] | None = None,
          body: bytes = b"") -> bytes:
    """The bytes of one request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def form(**params: str) -> bytes:
    """An ``application/x-www-form-urlencoded`` body."""
    return urlencode(params).encode()


def bearer(token: str, json_body: bool = False) -> dict[str, str]:
    """Authorization headers (and the JSON content type)."""
    headers = {"Authorization": f"Bearer {token}"}
    return {**headers, "Content-Type": "application/json"} if json_body else headers


class ConnPool:
    """A bounded pool of keep-alive connections for open-loop phases."""

    def __init__(self, port: int, size: int) -> None:
        self.queue: asyncio.Queue[HttpConn] = asyncio.Queue()
        for _ in range(size):
            self.queue.put_nowait(HttpConn(port))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """:meth:`HttpConn.request` on a free connection."""
        conn = await self.queue.get()
        try:
            return await conn.request(raw)
        finally:
            self.queue.put_nowait(conn)

    def close(self) -> None:
        """Close every connection."""
        while not self.queue.empty():
            self.queue.get_nowait().close()


# --------------------------------------------------------------------------- drivers


@dataclass
class Result:
    """One phase's outcome; CPU in cores of the server, this load generator and the rest."""

    name: str
    count: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds
    server_cpu: float | None = None
    client_cpu: float | None = None
    other_cpu: float | None = None
    error_samples: Counter[str] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Completions per second."""
        return self.count / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        """The p-th percentile latency in milliseconds."""
        return percentile(self.latencies, p) * 1000

    def error(self, sample: str) -> None:
        """Count an error, keeping a few samples."""
        self.errors += 1
        if len(self.error_samples) < 5 or sample in self.error_samples:
            self.error_samples[sample[:160]] += 1

    def record_cpu(self, cpu: CpuMeter) -> None:
        """End ``cpu``'s interval into the CPU fields (and ``extra["cpu"]``)."""
        split = self.extra["cpu"] = cpu.stop()
        self.server_cpu = split.get("server")
        self.client_cpu, self.other_cpu = split["loadgen"], split["other"]


Step = Callable[[HttpConn, int], Awaitable[tuple[bool, str]]]


def getter(raw: bytes, expect: int = 200) -> Step:
    """A step sending ``raw`` and expecting status ``expect``."""
    async def step(conn: HttpConn, _: int) -> tuple[bool, str]:
        status, body = await conn.request(raw)
        return status == expect, f"{status} {body[:80]!r}"
    return step


async def closed_loop(name: str, port: int, concurrency: int, warmup: float, duration: float,
                      step: Step, cpu: CpuMeter) -> Result:
    """``concurrency`` workers each run ``step`` again as soon as it returns; completions in
    the window after the warm-up are counted, and ``cpu`` metered over that window."""
    result = Result(name)
    t_measure = perf() + warmup
    t_end = t_measure + duration

    async def worker(i: int) -> None:
        conn = HttpConn(port)
        try:
            while perf() < t_end:
                t0 = perf()
                try:
                    ok, why = await step(conn, i)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        ValueError) as exc:
                    conn.close()
                    ok, why = False, f"{type(exc).__name__}: {exc}"
                t1 = perf()
                if t_measure <= t1 <= t_end:
                    if ok:
                        result.count += 1
                        result.latencies.append(t1 - t0)
                    else:
                        result.error(why)
        finally:
            conn.close()

    async def window() -> None:
        await asyncio.sleep(warmup)
        cpu.start()
        await asyncio.sleep(duration)
        result.record_cpu(cpu)

    measure = asyncio.create_task(window())
    await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(concurrency))),
                           warmup + duration + 60)
    await measure
    result.seconds = duration
    return result


async def open_loop(rate: float, duration: float,
                    fire: Callable[[float], Coroutine[Any, Any, Any]],
                    grace: float = 5.0) -> int:
    """Start ``fire(intended_time)`` ``rate`` times a second for ``duration`` seconds, on
    schedule whether or not earlier calls have finished; the number of calls."""
    n = max(1, int(rate * duration))
    t0 = perf() + 0.01
    tasks: list[asyncio.Task[Any]] = []
    for i in range(n):
        t = t0 + i / rate
        delay = t - perf()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(t)))
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    return n


# --------------------------------------------------------------------------- event streams

OnEvent = Callable[["WsStream", dict[str, Any], float], None]


class WsStream(asyncio.Protocol):
    """One ``/v1/events`` WebSocket: just enough RFC 6455 for it (the upgrade, optionally
    offering ``permessage-deflate`` as browsers do, the server's text frames, pings answered
    with masked pongs so uvicorn's keep-alive never drops it, close frames)."""

    def __init__(self, port: int, token: str, on_event: OnEvent, *, deflate: bool = False,
                 label: str = "") -> None:
        self.port, self.token, self.on_event, self.deflate, self.label = (
            port, token, on_event, deflate, label)
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None  # an asyncio or uvloop transport
        self.buf = bytearray()
        self.upgraded = self.closed = self.compressed = False
        self.close_reason = ""
        self._inflate: Any = None
        self.local_port = 0

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
        """Streams opened per second."""
        return self.opened / self.seconds if self.seconds else 0.0


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, exc.errno)} ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "timeout (no 101 within 30 s)"
    return f"{type(exc).__name__}: {str(exc)[:80]}"


async def open_streams(port: int, tokens: list[str], count: int, on_event: OnEvent, *,
                       into: list[WsStream], deflate: bool = False,
                       tick: Callable[[int], None] | None = None,
                       start_index: int = 0) -> OpenReport:
    """Open ``count`` streams into ``into`` (stream ``i`` uses ``tokens[i % len(tokens)]``),
    64 handshakes at a time; stops after 200 failures, each reason counted."""
    loop = asyncio.get_running_loop()
    report = OpenReport()
    gate = asyncio.Semaphore(64)
    t0 = perf()

    async def one(i: int) -> None:
        if sum(report.failures.values()) >= 200:
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
