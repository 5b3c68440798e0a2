"""A client that stops reading its event stream cannot grow a real ``interapp serve`` process's
memory: its stream is cut after the send timeout (``INTERAPP_STREAM_SEND_TIMEOUT``), another
stream of the same account keeps getting every event promptly, and the stalled client, once it
reads again, resumes with ``?since=`` and gets every missed event exactly once and in order.

The stalled client is a raw socket with a tiny receive buffer that completes the WebSocket
handshake and then reads nothing; the server's memory is its ``VmRSS``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from server_kit import (
    Endpoint,
    Session,
    app_name,
    assert_quiet,
    events,
    login,
    make_buddies,
    make_client,
    metric,
    next_event,
    rss_mib,
    serve,
    stream,
)

SEND_TIMEOUT = 2.0  # the server's INTERAPP_STREAM_SEND_TIMEOUT in this test
WARM_UP = 300  # messages before the stalled client connects (caches, pools, allocator arenas)
BLAST = 4000  # messages while it is stalled: ~25 MB of frames for it
BODY_CHARS = 6000
# What the server may hold for the stalled stream is its queue (at most 1,000 events, ~7 MB as
# Python objects) plus uvicorn's transport buffer (64 KiB high-water mark); the kernel holds ~3 MB
# more, outside the process. Keeping the ~21 MB the blast adds after the stall would exceed the
# limit even as bare frame bytes. Measured growth: 3-7 MiB.
MAX_GROWTH_MIB = 16.0
MAX_LATENCY = 5.0  # seconds from a send's 201 to the frame on the healthy stream
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class StalledClient:
    """A WebSocket client on a raw socket (receive buffer 4 KiB) that reads only when asked."""

    def __init__(self, url: str, token: str, since: int) -> None:
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1" and parts.port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect((parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET /v1/events?since={since} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(1024)
            assert chunk, "the server closed the connection during the handshake"
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), lines
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        headers = dict(line.split(": ", 1) for line in lines[1:])
        assert {k.lower(): v for k, v in headers.items()}["sec-websocket-accept"] == accept

    def _take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read_to_end(self) -> tuple[list[dict[str, Any]], int | None, str]:
        """Every frame until the close frame or EOF: the events, the close code, the reason."""
        got: list[dict[str, Any]] = []
        try:
            while True:
                first, second = self._take(2)
                assert first & 0x80 and not second & 0x80, "fragmented or masked server frame"
                length = second & 0x7F
                if length == 126:
                    length = struct.unpack("!H", self._take(2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", self._take(8))[0]
                payload = self._take(length)
                opcode = first & 0x0F
                if opcode == 0x1:
                    got.append(json.loads(payload))
                elif opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if payload else None
                    return got, code, payload[2:].decode()
                else:
                    assert opcode == 0x9, f"unexpected opcode {opcode}"  # keep-alive ping
        except EOFError:
            return got, None, ""

    def close(self) -> None:
        self.sock.close()


class Reader(threading.Thread):
    """A healthy stream reader: records each event with the time it arrived, then stays
    connected until ``release`` is set (so that the server's open-stream count stays honest)."""

    def __init__(self, server: Endpoint, token: str, since: int, count: int) -> None:
        super().__init__(daemon=True)
        self.args, self.count = (server, token, since), count
        self.got: list[tuple[float, dict[str, Any]]] = []
        self.error: BaseException | None = None
        self.ready, self.release = threading.Event(), threading.Event()

    def run(self) -> None:
        try:
            with stream(self.args[0], self.args[1], since=self.args[2]) as ws:
                self.ready.set()
                while len(self.got) < self.count:
                    event = next_event(ws, timeout=30)
                    self.got.append((time.monotonic(), event))
                while not self.release.is_set():
                    assert_quiet(ws, 0.2)
        except BaseException as exc:  # reported by the test thread
            self.error = exc
            self.ready.set()


class Sampler(threading.Thread):
    """Samples the server's RSS and its number of open streams every 0.2 s until stopped."""

    def __init__(self, pid: int, url: str) -> None:
        super().__init__(daemon=True)
        self.pid, self.url = pid, url
        self.samples: list[tuple[float, float, float]] = []  # (time, RSS MiB, open streams)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.samples.append((time.monotonic(), rss_mib(self.pid),
                                 metric(self.url, "interapp_active_streams")))


def post_many(http: httpx.Client, sender: Session, to: Session, bodies: list[str],
              tag: str) -> list[float]:
    """Send ``bodies`` in order; return the time each ``201`` came back."""
    sent = []
    for i, body in enumerate(bodies):
        resp = http.post("/v1/messages", headers=sender.headers(), json={
            "to": to.username, "body": body, "client_msg_id": f"{tag}{i}"})
        assert resp.status_code == 201, resp.text
        sent.append(time.monotonic())
    return sent


@pytest.mark.slow
def test_stalled_reader_is_cut_memory_stays_bounded_and_resume_is_exact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERAPP_STREAM_SEND_TIMEOUT", str(SEND_TIMEOUT))
    db = f"sqlite:///{tmp_path / 'stall.db'}"
    bodies = [secrets.token_hex(BODY_CHARS // 2) for _ in range(WARM_UP + BLAST)]
    with serve(app_name("stall"), db, None, None, tmp_path / "serve.log") as proc, \
            httpx.Client(base_url=proc.url, timeout=30) as http:
        server = Endpoint(proc.url, proc.ws_url, db)
        client = make_client(db)
        alice, bob = login(server, http, client), login(server, http, client)
        make_buddies(db, alice.user, bob.user)  # seq 1 of alice
        reader = Reader(server, alice.access, 1, WARM_UP + BLAST)
        reader.start()
        assert reader.ready.wait(15) and reader.error is None, reader.error
        sent = post_many(http, bob, alice, bodies[:WARM_UP], "w")
        while len(reader.got) < WARM_UP and reader.is_alive():
            time.sleep(0.05)

        since = 1 + WARM_UP
        stalled = StalledClient(proc.url, alice.access, since)
        deadline = time.monotonic() + 10
        while metric(proc.url, "interapp_active_streams") < 2:
            assert time.monotonic() < deadline, "the stalled stream never subscribed"
            time.sleep(0.05)
        baseline = min(rss_mib(proc.proc.pid) for _ in range(5))
        sampler = Sampler(proc.proc.pid, proc.url)
        sampler.start()
        start = time.monotonic()
        sent += post_many(http, bob, alice, bodies[WARM_UP:], "b")
        blast_end = time.monotonic()
        cut_deadline = blast_end + 2 * SEND_TIMEOUT + 5
        while not sampler.samples or sampler.samples[-1][2] > 1:
            assert time.monotonic() < cut_deadline, f"the stalled stream was not cut: " \
                f"{[(round(t - start, 1), rss, n) for t, rss, n in sampler.samples[-5:]]}"
            time.sleep(0.1)
        sampler.stop.set()
        sampler.join(10)
        while len(reader.got) < WARM_UP + BLAST and reader.is_alive():
            time.sleep(0.05)
        reader.release.set()
        reader.join(30)

        # (a) bounded memory, and the healthy stream got everything promptly, in order.
        assert reader.error is None, repr(reader.error)
        got = [event for _, event in reader.got]
        assert [e["seq"] for e in got] == list(range(2, 2 + WARM_UP + BLAST))
        assert [e["body"] for e in got] == bodies
        latencies = sorted(at - sent_at for (at, _), sent_at in zip(reader.got, sent, strict=True))
        peak = max(rss for _, rss, _ in sampler.samples)
        cut_at = next(t for t, _, streams in sampler.samples if streams <= 1) - start
        print(f"\nRSS baseline {baseline:.1f} MiB, peak {peak:.1f} MiB (+{peak - baseline:.1f}) "
              f"over {len(sampler.samples)} samples; blast of {BLAST} x {BODY_CHARS} chars took "
              f"{blast_end - start:.1f} s; stalled stream cut {cut_at:.1f} s after its start; "
              f"healthy-stream latency p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
              f"max {latencies[-1] * 1000:.0f} ms")
        assert peak - baseline < MAX_GROWTH_MIB
        assert latencies[-1] < MAX_LATENCY

        # (b) the stalled stream was closed by the server: reading again yields the frames that
        # were already written, then the close (4008 naming the last seq) or the end of the
        # connection.
        stalled.sock.settimeout(30)
        seen, code, reason = stalled.read_to_end()
        stalled.close()
        last = int(seen[-1]["seq"]) if seen else since
        print(f"stalled client read {len(seen)} events up to seq {last}, then "
              f"{f'close {code} {reason!r}' if code is not None else 'EOF'}")
        assert [e["seq"] for e in seen] == list(range(since + 1, last + 1))
        assert code in (None, 4008)
        if code is not None:
            assert reason == f"too slow: resume with since={last}"
        assert last < 1 + WARM_UP + BLAST, "the stalled client was never behind"

        # (c) resuming from the last seq seen gives every missed event once, in order.
        final = 1 + WARM_UP + BLAST
        with stream(server, alice.access, since=last) as ws:
            resumed = events(ws, final - last, timeout=30)
            assert_quiet(ws, 0.5)
        assert seen + resumed == got[WARM_UP:]
