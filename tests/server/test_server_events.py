"""``/v1/events`` over a real WebSocket (the ``websockets`` client): authentication by header or
single-use ticket, per-account ``seq``, replay with ``?since=`` after a reconnect with nothing lost
or repeated, and refusals. Runs once on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from server_kit import (
    Client,
    RunningServer,
    Session,
    app_name,
    assert_api_error,
    assert_quiet,
    buddies,
    events,
    login,
    make_buddies,
    make_client,
    next_event,
    stream,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection


def send(s: Session, to: Session, body: str) -> dict[str, object]:
    resp = s.post("/v1/messages", json={"to": to.username, "body": body,
                                        "client_msg_id": f"cm-{body}"})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def expect_refused(ws: ClientConnection, code: int, error: str) -> None:
    frame = next_event(ws)
    assert frame["type"] == "error" and frame["error"] == error, frame
    assert isinstance(frame["message"], str) and frame["message"]
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=10)
    assert ws.close_code == code


def test_message_event_shape_and_both_sides(server: RunningServer, http: httpx.Client,
                                            client: Client) -> None:
    a, b = buddies(server, http, client)
    with stream(server, a.access, since=1) as wa, stream(server, b.access, since=1) as wb:
        msg = send(b, a, "hello")
        got_a, got_b = next_event(wa), next_event(wb)
    expected = {"seq": 2, "type": "message", **msg}
    assert got_a == expected
    assert got_b == expected
    assert set(got_a) == {"seq", "type", "message_id", "client_msg_id", "from", "to", "body",
                          "sent_at"}


def test_replay_after_reconnect_loses_and_repeats_nothing(server: RunningServer,
                                                          http: httpx.Client,
                                                          client: Client) -> None:
    a, b = buddies(server, http, client)
    received: list[dict[str, object]] = []
    with stream(server, a.access, since=0) as wa:
        received.append(next_event(wa))  # contact_added
        for i in range(5):
            send(b, a, f"live{i}")
        received.extend(events(wa, 5))
    last = int(received[-1]["seq"])  # type: ignore[call-overload]
    # While a is away, b keeps writing.
    for i in range(7):
        send(b, a, f"offline{i}")
    with stream(server, a.access, since=last) as wa:
        replayed = events(wa, 7)
        send(b, a, "after")
        live = next_event(wa)
        assert_quiet(wa)
    received.extend(replayed)
    received.append(live)
    seqs = [int(e["seq"]) for e in received]  # type: ignore[call-overload]
    assert seqs == list(range(1, 15))
    assert [e.get("body") for e in received[1:]] == (
        [f"live{i}" for i in range(5)] + [f"offline{i}" for i in range(7)] + ["after"])
    # A full replay from 0 gives exactly the same events again.
    with stream(server, a.access, since=0) as wa:
        assert events(wa, 14) == received
        assert_quiet(wa)


def test_burst_arrives_in_order_exactly_once(server: RunningServer, http: httpx.Client,
                                             client: Client) -> None:
    a, b = buddies(server, http, client)
    with stream(server, a.access, since=1) as wa, stream(server, a.access, since=1) as wa2:
        for i in range(40):
            send(b, a, f"burst{i}")
        for ws in (wa, wa2):  # two streams of one account both get everything
            got = events(ws, 40)
            assert [e["seq"] for e in got] == list(range(2, 42))
            assert [e["body"] for e in got] == [f"burst{i}" for i in range(40)]
            assert_quiet(ws)


def test_without_since_the_stream_starts_now(server: RunningServer, http: httpx.Client,
                                             client: Client) -> None:
    a, b = buddies(server, http, client)
    send(b, a, "old")
    hub = server.asgi.state.server.hub
    before = hub.active_streams
    with stream(server, a.access) as wa:
        deadline = time.monotonic() + 10
        while hub.active_streams <= before:  # the in-process server shows when it has subscribed
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # ... and then reads where the stream starts
        send(b, a, "new")
        event = next_event(wa)
        assert (event["seq"], event["body"]) == (3, "new")
        assert_quiet(wa)


def test_ticket_is_single_use(server: RunningServer, http: httpx.Client,
                              client: Client) -> None:
    a, b = buddies(server, http, client)
    resp = a.post("/v1/events/ticket")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert set(body) == {"ticket", "expires_in"}
    assert body["expires_in"] == server.settings.ticket_ttl
    with stream(server, None, since=0, ticket=body["ticket"]) as ws:
        assert next_event(ws)["type"] == "contact_added"
        send(b, a, "via-ticket")
        assert next_event(ws)["body"] == "via-ticket"
    with stream(server, None, since=0, ticket=body["ticket"]) as ws:
        expect_refused(ws, 4401, "unauthorized")
    assert_api_error(http.post("/v1/events/ticket"), 401, "unauthorized")


def test_expired_ticket_is_refused(tmp_path: Path) -> None:
    with RunningServer(app_name("tick"), f"sqlite:///{tmp_path / 't.db'}", ticket_ttl=0) as srv, \
            srv.client() as http:
        s = login(srv, http, make_client(srv.db_url))
        ticket = s.post("/v1/events/ticket").json()["ticket"]
        time.sleep(0.05)
        with stream(srv, None, ticket=ticket) as ws:
            expect_refused(ws, 4401, "unauthorized")


def test_access_token_in_url_is_refused(server: RunningServer, http: httpx.Client,
                                        client: Client) -> None:
    a = login(server, http, client)
    with stream(server, None, access_token=a.access) as ws:
        expect_refused(ws, 4401, "unauthorized")
    # Even alongside a valid header.
    with stream(server, a.access, access_token=a.access) as ws:
        expect_refused(ws, 4401, "unauthorized")


# "²" is a digit to str.isdigit() but not to int() (it crashed the stream); int() reads "١٢"
# and a bold nine: only ASCII digits are a seq
@pytest.mark.parametrize("since", ["abc", "-1", "1.5", "9" * 30, "²", "1²", "١٢", "\U0001d7d7"])
def test_invalid_since(server: RunningServer, http: httpx.Client, client: Client,
                       since: str) -> None:
    a = login(server, http, client)
    with stream(server, a.access, since=since) as ws:
        expect_refused(ws, 4400, "bad_request")


def test_a_deeply_nested_frame_is_refused_cleanly(server: RunningServer, http: httpx.Client,
                                                   client: Client) -> None:
    """5,000 nested arrays make json.loads raise RecursionError: an error frame and 4400."""
    a, b = buddies(server, http, client)
    for frame in ("[" * 5000 + "]" * 5000, '{"type": "send", "to": ' + "[" * 5000):
        with stream(server, a.access, since=1) as ws:
            ws.send(frame)
            expect_refused(ws, 4400, "bad_request")
    with stream(server, a.access, since=1) as ws:  # nothing broke: the next stream works
        send(b, a, "after")
        assert next_event(ws)["body"] == "after"


def test_a_since_past_the_newest_event_is_refused_with_where_the_log_ends(
        server: RunningServer, http: httpx.Client, client: Client) -> None:
    """A cursor kept across a reset of the server's data: accepting it would drop every live
    event up to it as already seen, so it is refused with the ``last_seq`` to resume from."""
    a, b = buddies(server, http, client)
    send(b, a, "one")  # a's log: contact_added, message
    with stream(server, a.access, since=0) as ws:
        newest = events(ws, 2)[-1]["seq"]
    with stream(server, a.access, since=newest + 1000) as ws:
        frame = next_event(ws)
        assert frame["type"] == "error" and frame["error"] == "cursor_unknown", frame
        assert frame["last_seq"] == newest and f"since={newest}" in frame["message"]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4400
    with stream(server, a.access, since=newest) as ws:  # the cursor it was told: live again
        send(b, a, "two")
        assert next_event(ws)["seq"] == newest + 1


def test_a_plain_get_is_told_to_upgrade(server: RunningServer, http: httpx.Client,
                                        client: Client) -> None:
    """Without the WebSocket handshake: 426 Upgrade Required, the ``/v1`` error body and
    ``Upgrade: websocket`` (RFC 9110 §15.5.22), with or without a token; other methods 405."""
    a = login(server, http, client)
    for headers in ({}, a.headers()):
        resp = http.get("/v1/events", params={"since": "0"}, headers=headers)
        assert_api_error(resp, 426, "upgrade_required")
        assert resp.headers["upgrade"] == "websocket"
        assert "upgrade" in resp.headers["connection"].lower()
    assert_api_error(http.post("/v1/events", headers=a.headers()), 405, "method_not_allowed")
    with stream(server, a.access) as ws:  # the WebSocket itself is unchanged
        assert_quiet(ws)


def test_missing_or_dead_credentials(server: RunningServer, http: httpx.Client,
                                     client: Client) -> None:
    with stream(server, None) as ws:
        expect_refused(ws, 4401, "unauthorized")
    with stream(server, "ia_at_forged") as ws:
        expect_refused(ws, 4401, "unauthorized")
    a = login(server, http, client)
    http.post("/oauth/revoke", auth=client.basic(), data={"token": a.tokens["refresh_token"]})
    with stream(server, a.access) as ws:
        expect_refused(ws, 4401, "unauthorized")


def test_since_beyond_the_end_waits_for_new_events(server: RunningServer, http: httpx.Client,
                                                   client: Client) -> None:
    a, b = buddies(server, http, client)
    with stream(server, a.access, since=1) as wa:
        assert_quiet(wa)
        send(b, a, "first")
        assert next_event(wa)["seq"] == 2


def test_concurrent_writers_never_share_or_skip_a_seq(server: RunningServer, http: httpx.Client,
                                                      client: Client) -> None:
    """Four buddies write to one account at once: its seqs stay gap-free and unique."""
    target = login(server, http, client)
    writers = [login(server, http, client) for _ in range(4)]
    for w in writers:
        make_buddies(server.db_url, target.user, w.user)  # seqs 1-4 of target
    failures: list[str] = []

    def write(w: Session) -> None:
        with server.client() as h:
            for i in range(10):
                resp = h.post("/v1/messages", headers=w.headers(), json={
                    "to": target.username, "body": f"{w.username}:{i}"})
                if resp.status_code != 201:
                    failures.append(resp.text)

    with stream(server, target.access, since=4) as ws:
        threads = [threading.Thread(target=write, args=(w,)) for w in writers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert failures == []
        got = events(ws, 40)
        assert_quiet(ws)
    assert [e["seq"] for e in got] == list(range(5, 45))
    bodies = [e["body"] for e in got]
    assert sorted(bodies) == sorted(f"{w.username}:{i}" for w in writers for i in range(10))
    for w in writers:  # each writer's own messages arrive in the order they were sent
        mine = [b for b in bodies if b.startswith(w.username + ":")]
        assert mine == [f"{w.username}:{i}" for i in range(10)]
