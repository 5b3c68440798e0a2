"""Revocation reaches open event streams: after an RFC 7009 revoke, ``interapp admin revoke`` or
``interapp admin set-password``, a ``/v1/events`` stream opened with the revoked token — by
``Authorization: Bearer`` or by a ticket minted with it — ends with an ``unauthorized`` error
frame and close code 4401, within seconds, on SQLite and PostgreSQL and across two server
processes (PostgreSQL + Redis). Streams of other logins and other accounts stay open.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_kit import (
    INTERAPP,
    Client,
    Endpoint,
    RunningServer,
    Session,
    app_name,
    assert_quiet,
    buddies,
    login,
    make_buddies,
    make_client,
    next_event,
    password_login,
    serve,
    stream,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

BOUND = 10.0  # seconds for a revoked stream to close (a poll each second; the machine is busy)
KINDS = ["bearer", "ticket"]


@contextmanager
def open_stream(server: RunningServer | Endpoint, s: Session, kind: str,
                since: int = 1) -> Iterator[ClientConnection]:
    """``s``'s event stream, opened with its access token or with a ticket minted with it."""
    if kind == "bearer":
        with stream(server, s.access, since=since) as ws:
            yield ws
        return
    resp = s.post("/v1/events/ticket")
    assert resp.status_code == 201, resp.text
    with stream(server, None, since=since, ticket=resp.json()["ticket"]) as ws:
        yield ws


def send(s: Session, to: Session, body: str) -> None:
    resp = s.post("/v1/messages", json={"to": to.username, "body": body})
    assert resp.status_code == 201, resp.text


def closed_unauthorized(ws: ClientConnection, timeout: float = BOUND) -> list[dict[str, Any]]:
    """Wait for the 4401 close; return the events that came before the error frame."""
    deadline = time.monotonic() + timeout
    before: list[dict[str, Any]] = []
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"still open {timeout} s after the revocation; got {before}"
        try:
            frame = next_event(ws, timeout=left)
        except TimeoutError:
            continue
        except ConnectionClosed:
            raise AssertionError(f"closed with {ws.close_code} and no error frame") from None
        if frame.get("type") == "error":
            assert frame["error"] == "unauthorized", frame
            assert "revoked" in frame["message"], frame
            break
        before.append(frame)
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=timeout)
    assert ws.close_code == 4401, (ws.close_code, ws.close_reason)
    return before


def admin(db_url: str, app: str, *args: str, stdin: str | None = None) -> None:
    out = subprocess.run([INTERAPP, "admin", *args, "--app", app, "--db", db_url], input=stdin,
                         capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_rfc7009_revoke_closes_the_logins_streams_before_anything_else(
        server: RunningServer, http: httpx.Client, client: Client, kind: str) -> None:
    a, b = buddies(server, http, client)
    other_login = Session(a.user, password_login(http, client, a.username), http)
    with open_stream(server, a, kind) as ws, open_stream(server, other_login, kind) as kept, \
            open_stream(server, b, kind) as bystander:
        send(b, a, "before")
        assert next_event(ws)["body"] == "before"
        assert next_event(kept)["body"] == "before"
        assert next_event(bystander)["body"] == "before"
        resp = http.post("/oauth/revoke", auth=client.basic(),
                         data={"token": a.tokens["refresh_token"]})
        assert resp.status_code == 200
        send(b, a, "after")  # answered after the revocation: never on the revoked stream
        assert closed_unauthorized(ws) == []
        # a's other login and b's stream are untouched
        assert next_event(kept)["body"] == "after"
        assert next_event(bystander)["body"] == "after"
        assert_quiet(kept, 0.5)


@pytest.mark.parametrize("kind", KINDS)
def test_rfc7009_revoke_of_an_access_token_closes_its_streams(
        server: RunningServer, http: httpx.Client, client: Client, kind: str) -> None:
    a, b = buddies(server, http, client)
    with open_stream(server, a, kind) as ws:
        assert http.post("/oauth/revoke", auth=client.basic(), data={
            "token": a.access, "token_type_hint": "access_token"}).status_code == 200
        send(b, a, "after")
        assert closed_unauthorized(ws) == []


@pytest.mark.parametrize("command", ["revoke", "set-password"])
@pytest.mark.parametrize("kind", KINDS)
def test_admin_commands_close_every_stream_of_the_account(
        server: RunningServer, http: httpx.Client, client: Client, kind: str,
        command: str) -> None:
    a, b = buddies(server, http, client)
    other_login = Session(a.user, password_login(http, client, a.username), http)
    with open_stream(server, a, kind) as ws, open_stream(server, other_login, kind) as ws2, \
            open_stream(server, b, kind) as bystander:
        args = [command, a.username] + (["--password-stdin"] if command == "set-password" else [])
        started = time.monotonic()
        admin(server.db_url, server.settings.app, *args,
              stdin="a new password\n" if command == "set-password" else None)
        closed_unauthorized(ws)
        closed_unauthorized(ws2)
        print(f"{command}: both streams closed {time.monotonic() - started:.2f} s "
              "after the command started")
        assert a.get("/v1/me").status_code == 401
        assert_quiet(bystander, 0.3)  # b's stream is open and fine
        bystander.ping().wait(5)


def test_a_ticket_minted_with_a_revoked_token_is_refused(
        server: RunningServer, http: httpx.Client, client: Client) -> None:
    a = login(server, http, client)
    ticket = a.post("/v1/events/ticket").json()["ticket"]
    assert http.post("/oauth/revoke", auth=client.basic(),
                     data={"token": a.tokens["refresh_token"]}).status_code == 200
    with stream(server, None, ticket=ticket) as ws:
        frame = next_event(ws)
        assert frame["type"] == "error" and frame["error"] == "unauthorized", frame
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4401


@pytest.mark.slow
def test_revocation_crosses_server_processes(pg_url: str, redis_url: str,
                                             tmp_path: Path) -> None:
    """Two ``interapp serve`` processes on one PostgreSQL and Redis: streams on one close when
    the token is revoked through the other, or by an admin command."""
    app = app_name("revoke")
    with serve(app, pg_url, redis_url, None, tmp_path / "a.log") as one, \
            serve(app, pg_url, redis_url, None, tmp_path / "b.log") as two:
        first, second = Endpoint(one.url, one.ws_url, pg_url), Endpoint(two.url, two.ws_url, pg_url)
        client = make_client(pg_url)
        with httpx.Client(base_url=one.url, timeout=15) as h1, \
                httpx.Client(base_url=two.url, timeout=15) as h2:
            alice, bob = login(first, h1, client), login(first, h1, client)
            make_buddies(pg_url, alice.user, bob.user)
            carol = login(second, h2, client)
            last = 1  # alice's seq: contact_added
            for kind in KINDS:
                with open_stream(first, alice, kind, since=last) as ws:
                    send(Session(bob.user, bob.tokens, h2), alice, f"via two ({kind})")
                    event = next_event(ws)
                    assert event["body"] == f"via two ({kind})"
                    last = event["seq"]
                    started = time.monotonic()
                    assert h2.post("/oauth/revoke", auth=client.basic(), data={
                        "token": alice.access}).status_code == 200  # through the other one
                    closed_unauthorized(ws)
                    print(f"{kind}: closed on process one {time.monotonic() - started:.2f} s "
                          "after the revoke through process two")
                alice = login(first, h1, client, alice.user)  # a fresh login for the next kind
            carol_h1 = Session(carol.user, carol.tokens, h1)
            with open_stream(first, carol_h1, "ticket", since=0) as ws, \
                    open_stream(second, carol, "bearer", since=0) as ws2:
                admin(pg_url, app, "revoke", carol.username)
                closed_unauthorized(ws)
                closed_unauthorized(ws2)
