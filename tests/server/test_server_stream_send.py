"""Sending messages on ``/v1/events`` (``send`` frames answered by ``sent``/``send_failed``):
the same message, checks and events as ``POST /v1/messages``, over a real WebSocket, on SQLite
and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_kit import (
    Client,
    RunningServer,
    assert_quiet,
    buddies,
    login,
    next_event,
    stream,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

EARLY: dict[int, list[dict[str, Any]]] = {}  # events read before an answer, per socket


@pytest.fixture(autouse=True)
def _fresh_early() -> Iterator[None]:
    EARLY.clear()
    yield
    assert not any(EARLY.values()), f"events left unread: {EARLY}"
    EARLY.clear()


def send_frame(ws: ClientConnection, **fields: Any) -> dict[str, Any]:
    """Send a ``send`` frame and return the answer; events that come first (the ``message``
    event may overtake the answer) are kept for :func:`next_frame`."""
    ws.send(json.dumps({"type": "send", **fields}))
    while True:
        frame = next_event(ws)
        if frame["type"] in ("sent", "send_failed"):
            return frame
        EARLY.setdefault(id(ws), []).append(frame)


def next_frame(ws: ClientConnection) -> dict[str, Any]:
    """The next event: one kept by :func:`send_frame`, else the next on the socket."""
    early = EARLY.get(id(ws))
    return early.pop(0) if early else next_event(ws)


def test_a_message_sent_on_the_stream_is_stored_and_delivered_once(
        server: RunningServer, http: httpx.Client, client: Client) -> None:
    a, b = buddies(server, http, client)
    with stream(server, a.access, since=1) as wa, stream(server, b.access, since=1) as wb:
        answer = send_frame(wa, to=b.username, body="over the stream", client_msg_id="s1")
        assert answer["type"] == "sent" and answer["client_msg_id"] == "s1"
        assert "seq" not in answer
        message = answer["message"]
        assert message["from"] == a.username and message["to"] == b.username
        assert message["body"] == "over the stream" and message["client_msg_id"] == "s1"
        expected = {"seq": 2, "type": "message", **message}
        assert next_frame(wb) == expected
        assert next_frame(wa) == expected  # the sender's own stream has it in order too
        # The same client_msg_id again: the same message, no second event.
        again = send_frame(wa, to=b.username, body="over the stream", client_msg_id="s1")
        assert again["type"] == "sent" and again["message"] == message
        assert_quiet(wb)
    history = a.get(f"/v1/conversations/{b.username}/messages").json()["messages"]
    assert [m["body"] for m in history] == ["over the stream"]
    # HTTP with the same client_msg_id is the same message too.
    resp = a.post("/v1/messages", json={"to": b.username, "body": "over the stream",
                                        "client_msg_id": "s1"})
    assert resp.status_code == 201 and resp.json() == message


def test_refused_sends_are_answered_and_the_stream_stays_open(
        server: RunningServer, http: httpx.Client, client: Client) -> None:
    a, b = buddies(server, http, client)
    stranger = login(server, http, client)
    with stream(server, a.access, since=1) as wa:
        cases = [
            ({"to": b.username, "body": "x" * 8001, "client_msg_id": "big"}, 400, "bad_request"),
            ({"to": b.username, "body": "no id"}, 400, "bad_request"),
            ({"to": b.username, "body": 5, "client_msg_id": "num"}, 400, "bad_request"),
            ({"to": "nobody-here", "body": "hi", "client_msg_id": "nf"}, 404, "not_found"),
            ({"to": stranger.username, "body": "hi", "client_msg_id": "fb"}, 403, "forbidden"),
        ]
        for fields, status, error in cases:
            answer = send_frame(wa, **fields)
            assert answer["type"] == "send_failed", answer
            assert (answer["status"], answer["error"]) == (status, error), answer
            assert answer["client_msg_id"] == fields.get("client_msg_id")
            assert isinstance(answer["message"], str) and answer["message"]
        ws_ok = send_frame(wa, to=b.username, body="still open", client_msg_id="ok")
        assert ws_ok["type"] == "sent"
        # Frames that are not sends (or not JSON) are ignored, as before.
        wa.send("not json")
        wa.send(json.dumps({"type": "ping"}))
        assert next_frame(wa)["body"] == "still open"
        assert_quiet(wa)


def test_sending_needs_a_live_bearer_token(server: RunningServer, http: httpx.Client,
                                           client: Client) -> None:
    a, b = buddies(server, http, client)
    ticket = a.post("/v1/events/ticket").json()["ticket"]
    with stream(server, None, since=1, ticket=ticket) as wt:
        answer = send_frame(wt, to=b.username, body="by ticket", client_msg_id="t1")
        assert (answer["type"], answer["status"], answer["error"]) == (
            "send_failed", 401, "unauthorized")
    with stream(server, a.access, since=1) as wa:
        assert send_frame(wa, to=b.username, body="before", client_msg_id="r1")["type"] == "sent"
        assert next_frame(wa)["body"] == "before"
        revoked = http.post("/oauth/revoke", auth=client.basic(), data={"token": a.access})
        assert revoked.status_code == 200
        # the revocation closes the stream (4401); a send that gets in first is refused, and
        # one that comes after the close cannot be sent at all
        try:
            wa.send(json.dumps({"type": "send", "to": b.username, "body": "after",
                                "client_msg_id": "r2"}))
        except ConnectionClosed:
            assert wa.close_code == 4401
        frames = []
        with pytest.raises(ConnectionClosed):
            while True:
                frames.append(next_event(wa))
        assert wa.close_code == 4401
        assert frames and frames[-1]["error"] == "unauthorized", frames
        assert all(f["type"] == "error" or (f["type"], f["status"]) == ("send_failed", 401)
                   for f in frames), frames
    bodies = [m["body"] for m in b.get(f"/v1/conversations/{a.username}/messages")
              .json()["messages"]]
    assert bodies == ["before"]
