"""Connection limits of a real ``interapp serve``: connections that send nothing, half a request
or a trickle of header bytes are closed once the header timeout has passed (``408`` when part
of a request had come), an idle keep-alive connection after the keep-alive timeout, oversized
headers get ``431``, a trickled body ``408``, and past ``--limit-concurrency`` new requests and
streams get ``503`` — all as JSON. Short timeouts are configured so the test stays fast; the
bounds allow for a busy machine.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from server_kit import (
    Endpoint,
    RunningServer,
    ServeProcess,
    app_name,
    buddies,
    established_peers,
    make_client,
    next_event,
    serve,
    stream,
)
from websockets.exceptions import InvalidStatus

HEADER_TIMEOUT = 1.0
BOUND = 15.0  # every silent connection must be gone within this (the review saw 70 s and more)


def address(srv: ServeProcess) -> tuple[str, int]:
    parts = urlsplit(srv.url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def read_until_closed(socks: list[socket.socket], deadline: float) -> dict[socket.socket, bytes]:
    """What each socket received until the server closed it (or the deadline passed)."""
    got = {s: b"" for s in socks}
    open_ = set(socks)
    while open_ and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_), [], [], 0.2)
        for s in ready:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                got[s] += data
            else:
                open_.discard(s)
    assert not open_, f"{len(open_)} of {len(socks)} connections still open after the bound"
    return got


def json_answer(raw: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body)


@pytest.fixture
def guarded(tmp_path: Path) -> ServeProcess:
    db = f"sqlite:///{tmp_path / 'timeouts.db'}"
    with serve(app_name("timeouts"), db, None, None, tmp_path / "serve.log", extra=(
            "--timeout-header", str(HEADER_TIMEOUT), "--timeout-keep-alive", "1")) as srv:
        yield srv


def test_silent_partial_and_trickling_connections_are_closed(guarded: ServeProcess) -> None:
    host, port = address(guarded)
    silent = [socket.create_connection((host, port)) for _ in range(20)]
    partial = [socket.create_connection((host, port)) for _ in range(20)]
    trickle = [socket.create_connection((host, port)) for _ in range(11)]
    for s in partial:
        s.sendall(b"GET /v1/me HTTP/1.1\r\nHost: x\r\n")  # no end of the headers
    started = time.monotonic()
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    sent = 0
    while time.monotonic() - started < HEADER_TIMEOUT * 3:  # a byte every 0.2 s, never done
        for s in trickle:
            with contextlib.suppress(OSError):  # closed by the server already
                s.send(request[sent:sent + 1])
        sent += 1
        time.sleep(0.2)
    with httpx.Client(base_url=guarded.url, timeout=10) as http:  # others are served meanwhile
        assert http.get("/healthz").status_code == 200
    got = read_until_closed(silent + partial + trickle, started + BOUND)
    assert all(got[s] == b"" for s in silent)  # nothing was asked: closed without an answer
    for s in partial + trickle:
        status, body = json_answer(got[s])
        assert status == 408 and body["error"] == "request_timeout", body
    assert established_peers(guarded.proc.pid, port) == set()
    for s in silent + partial + trickle:
        s.close()


def test_an_idle_keep_alive_connection_is_closed(guarded: ServeProcess) -> None:
    host, port = address(guarded)
    with socket.create_connection((host, port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_until_closed([s], time.monotonic() + BOUND)[s]
    assert got.startswith(b"HTTP/1.1 200")  # answered, then closed when idle


def test_streams_and_paced_requests_outlive_the_header_timeout(guarded: ServeProcess,
                                                              tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'timeouts.db'}"
    handle = Endpoint(guarded.url, guarded.ws_url, db)
    with httpx.Client(base_url=guarded.url, timeout=10) as http:
        a, b = buddies(handle, http, make_client(db))
        with stream(handle, a.access, since=1) as ws:
            for i in range(3):  # one keep-alive connection, requests 0.6 s apart
                time.sleep(0.6)
                assert b.post("/v1/messages", json={"to": a.username, "body": f"m{i}"}
                              ).status_code == 201
            time.sleep(HEADER_TIMEOUT * 2)  # an open stream is not a slow request
            assert [next_event(ws)["body"] for _ in range(3)] == ["m0", "m1", "m2"]


def test_oversized_headers_get_431(guarded: ServeProcess) -> None:
    host, port = address(guarded)
    with socket.create_connection((host, port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n")
        got = read_until_closed([s], time.monotonic() + BOUND)[s]
    status, body = json_answer(got)
    assert status == 431 and body["error"] == "headers_too_large"
    with socket.create_connection((host, port)) as s:  # a request it cannot parse: JSON 400
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n")
        got = read_until_closed([s], time.monotonic() + BOUND)[s]
    status, body = json_answer(got)
    assert status == 400 and body["error"] == "bad_request"


def test_a_trickled_body_gets_408(tmp_path: Path) -> None:
    with RunningServer(app_name("body"), f"sqlite:///{tmp_path / 'b.db'}",
                       body_timeout=1.0) as srv, socket.create_connection(
            ("127.0.0.1", srv.port)) as s:
        s.sendall(b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                  b"Content-Type: application/x-www-form-urlencoded\r\n\r\ngrant_type")
        started = time.monotonic()
        s.settimeout(BOUND)
        raw = s.recv(65536)
        assert time.monotonic() - started < BOUND
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), raw
    assert json.loads(body)["error"] == "request_timeout"


def test_over_the_concurrency_limit_new_requests_and_streams_get_503(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'limit.db'}"
    with serve(app_name("limit"), db, None, None, tmp_path / "serve.log", extra=(
            "--limit-concurrency", "6", "--timeout-header", "2")) as srv:
        host, port = address(srv)
        handle = Endpoint(srv.url, srv.ws_url, db)
        with httpx.Client(base_url=srv.url, timeout=10) as http:
            a, _ = buddies(handle, http, make_client(db))
        hogs = [socket.create_connection((host, port)) for _ in range(6)]
        time.sleep(0.3)  # accepted
        with httpx.Client(base_url=srv.url, timeout=10) as http:
            busy = http.get("/healthz")
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"] == "unavailable" and busy.headers["retry-after"] == "1"
        with pytest.raises(InvalidStatus) as refused, stream(handle, a.access):
            pass
        assert refused.value.response.status_code == 503
        read_until_closed(hogs, time.monotonic() + BOUND)  # the header timeout frees them
        with httpx.Client(base_url=srv.url, timeout=10) as http:
            assert http.get("/healthz").status_code == 200
        with stream(handle, a.access, since=0) as ws:
            assert next_event(ws)["type"] == "contact_added"
        for s in hogs:
            s.close()
