"""Rich presence and invites on the real server, on SQLite and PostgreSQL: the activity on
``PUT /v1/presence``, ``/v1/me``, ``/v1/contacts`` (also from the hot-read cache) and
``presence`` events; ``/v1/invites`` round trips, expiry, idempotency, buddies only; and bad
input refused with a 4xx JSON error, nothing stored."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_kit import (
    Client,
    Endpoint,
    RunningServer,
    app_name,
    assert_api_error,
    assert_quiet,
    buddies,
    login,
    make_buddies,
    make_client,
    next_event,
    serve,
    stream,
)

from interapp.presence import parse_iso_utc
from interapp.server.api.hotreads import PageCache

ARENA = {"name": "Arena", "details": "Ranked 2v2", "state": "level 7",
         "party": {"id": "p-1", "size": 2, "max": 4},
         "started_at": "2026-12-03T11:48:00.000Z", "join": {"url": "https://arena.example/j/1"}}
PUBLIC = "http://richfan.interapp.test"


def test_activity_reaches_buddies_me_and_contacts(server: RunningServer, http: httpx.Client,
                                                  client: Client) -> None:
    a, b = buddies(server, http, client)
    pages: PageCache = server.asgi.state.hot_reads
    b.get("/v1/contacts")
    b.get("/v1/contacts")  # cached now: the change below must still be seen at once
    a.get("/v1/me")
    hits = pages.hits
    with stream(server, b.access, since=1) as wb:
        resp = a.put("/v1/presence", json={"state": "busy", "status_text": "in a match",
                                            "activity": ARENA})
        assert resp.status_code == 200, resp.text
        assert resp.json()["activity"] == ARENA
        event = next_event(wb)
        assert event == {"seq": 2, "type": "presence", "username": a.username, "state": "busy",
                         "status_text": "in a match", "activity": ARENA}
        assert a.get("/v1/me").json()["activity"] == ARENA
        (listed,) = b.get("/v1/contacts").json()["contacts"]
        assert listed["activity"] == ARENA and listed["presence"] == "busy"
        assert b.get("/v1/contacts").json()["contacts"][0]["activity"] == ARENA  # cached
        assert pages.hits > hits

        # Only the activity: state and status text stay; the event carries all three.
        level8 = {**ARENA, "state": "level 8", "party": {"id": "p-1", "size": 3, "max": 4}}
        resp = a.put("/v1/presence", json={"activity": level8})
        assert resp.status_code == 200, resp.text
        assert (resp.json()["presence"], resp.json()["status_text"]) == ("busy", "in a match")
        assert next_event(wb)["activity"] == level8
        # State without activity: the activity stays.
        a.put("/v1/presence", json={"state": "away"})
        event = next_event(wb)
        assert (event["state"], event["activity"]) == ("away", level8)
        assert b.get("/v1/contacts").json()["contacts"][0]["activity"] == level8
        # null clears it.
        a.put("/v1/presence", json={"state": "online", "activity": None})
        assert next_event(wb)["activity"] is None
        assert a.get("/v1/me").json()["activity"] is None
        assert b.get("/v1/contacts").json()["contacts"][0]["activity"] is None


def test_times_are_normalised_and_partial_activities_fill_nulls(
        server: RunningServer, http: httpx.Client, client: Client) -> None:
    a = login(server, http, client)
    resp = a.put("/v1/presence", json={"activity": {"name": "Arena",
                                                    "started_at": "2026-12-03T13:48:00+02:00"}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["activity"] == {"name": "Arena", "details": None, "state": None,
                                       "party": None, "started_at": "2026-12-03T11:48:00.000Z",
                                       "join": None}


BAD_ACTIVITIES: list[Any] = [
    {"name": "x" * 129}, {"details": 7}, {"state": "two\nlines"}, {"colour": "red"},
    {"party": {"size": 5, "max": 4}}, {"party": {"size": 0}}, {"party": {"max": 1001}},
    {"party": {"size": True}}, {"party": {"size": "2"}}, {"party": {"id": "i" * 129}},
    {"join": {"url": "javascript:alert(1)"}}, {"join": {"url": "file:///etc/passwd"}},
    {"join": {"url": "https://a.example/" + "x" * 2048}}, {"join": {"url": "http://"}},
    {"join": "https://a.example"}, {"started_at": "2026-12-03T11:48:00"},
    {"started_at": "soon"}, {"started_at": 1}, "Arena", [ARENA],
]


@pytest.mark.parametrize("bad", BAD_ACTIVITIES)
def test_a_bad_activity_is_refused_and_nothing_stored(server: RunningServer, http: httpx.Client,
                                                      client: Client, bad: Any) -> None:
    a, b = buddies(server, http, client)
    assert a.put("/v1/presence", json={"state": "online", "activity": ARENA}).status_code == 200
    with stream(server, b.access, since=2) as wb:
        for body in ({"activity": bad}, {"state": "busy", "status_text": "x", "activity": bad}):
            resp = a.put("/v1/presence", json=body)
            assert_api_error(resp, 400, "invalid_activity")
        assert_quiet(wb)
    me = a.get("/v1/me").json()
    assert (me["presence"], me["status_text"], me["activity"]) == ("online", "", ARENA)


def test_an_empty_body_and_text_without_state_are_refused(
        server: RunningServer, http: httpx.Client, client: Client) -> None:
    a = login(server, http, client)
    assert_api_error(a.put("/v1/presence", json={}), 400, "bad_request")
    assert_api_error(a.put("/v1/presence", json={"status_text": "x", "activity": None}),
                     400, "bad_request")


def invite(sender: Any, to: str, **body: Any) -> httpx.Response:
    return sender.post("/v1/invites", json={"to": to, **body})


def test_invite_round_trip(server: RunningServer, http: httpx.Client, client: Client) -> None:
    a, b = buddies(server, http, client)
    with stream(server, a.access, since=1) as wa, stream(server, b.access, since=1) as wb:
        resp = invite(a, b.username, activity=ARENA, message="one more?",
                      client_invite_id="inv-1")
        assert resp.status_code == 201, resp.text
        sent = resp.json()
        assert {k: sent[k] for k in ("from", "to", "activity", "join_url", "message", "state")} \
            == {"from": a.username, "to": b.username, "activity": ARENA, "join_url": None,
                "message": "one more?", "state": "pending"}
        created = time.time()
        assert sent["expires_at"] > sent["created_at"]
        got = next_event(wb)
        assert got == {"seq": 2, "type": "invite", **sent}
        # the same client_invite_id again: the same invite, and nobody is told twice
        again = invite(a, b.username, activity=ARENA, message="one more?",
                       client_invite_id="inv-1")
        assert again.status_code == 201 and again.json() == sent
        assert_quiet(wb)
        assert_api_error(invite(a, b.username, activity=ARENA, message="changed",
                                client_invite_id="inv-1"), 409, "conflict")
        # both sides list it while pending
        assert b.get("/v1/invites").json() == {"invites": [sent]}
        assert a.get("/v1/invites").json() == {"invites": [sent]}
        # only the recipient answers
        assert_api_error(a.post(f"/v1/invites/{sent['id']}/accept"), 404, "not_found")
        accepted = b.post(f"/v1/invites/{sent['id']}/accept")
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {**sent, "state": "accepted"}
        answer = next_event(wa)
        assert answer == {"seq": 2, "type": "invite_answer", **sent, "state": "accepted"}
        assert next_event(wb)["type"] == "invite_answer"  # the recipient's other devices
        # the same answer again is the same invite; another answer is refused
        assert b.post(f"/v1/invites/{sent['id']}/accept").json()["state"] == "accepted"
        assert_api_error(b.post(f"/v1/invites/{sent['id']}/decline"), 409, "invite_closed")
        assert_quiet(wa)
        assert b.get("/v1/invites").json() == {"invites": []}
    assert time.time() - created < 600

    # a join link instead, declined
    link = invite(b, a.username, join_url="steam://joinlobby/1/2").json()
    assert link["join_url"] == "steam://joinlobby/1/2" and link["activity"] is None
    declined = a.post(f"/v1/invites/{link['id']}/decline").json()
    assert declined["state"] == "declined"


def test_neither_activity_nor_link_invites_to_the_current_activity(
        server: RunningServer, http: httpx.Client, client: Client) -> None:
    a, b = buddies(server, http, client)
    assert_api_error(invite(a, b.username), 400, "invalid_invite")  # no activity shown yet
    a.put("/v1/presence", json={"activity": ARENA})
    sent = invite(a, b.username, message="join").json()
    assert sent["activity"] == ARENA


def test_invites_expire(server: RunningServer, http: httpx.Client, client: Client) -> None:
    a, b = buddies(server, http, client)
    default = invite(a, b.username, join_url="https://arena.example/j/2").json()
    ttl = parse_iso_utc(default["expires_at"]) - parse_iso_utc(default["created_at"])
    assert ttl.total_seconds() == 600  # the default: ten minutes
    with stream(server, a.access, since=1) as wa:
        short = invite(a, b.username, join_url="https://arena.example/j/3", expires_in=1).json()
        time.sleep(1.3)
        assert [i["id"] for i in b.get("/v1/invites").json()["invites"]] == [default["id"]]
        expired = next_event(wa)
        assert (expired["type"], expired["id"], expired["state"]) == (
            "invite_answer", short["id"], "expired")
        assert_api_error(b.post(f"/v1/invites/{short['id']}/accept"), 409, "invite_closed")
        assert_quiet(wa)


def test_the_sender_hears_of_an_expiry_without_asking(server: RunningServer,
                                                      http: httpx.Client,
                                                      client: Client) -> None:
    a, b = buddies(server, http, client)
    with stream(server, a.access, since=1) as wa, stream(server, b.access, since=1) as wb:
        sent = invite(a, b.username, join_url="https://arena.example/j/4", expires_in=1).json()
        assert next_event(wb)["type"] == "invite"
        # nobody touches the invites: the server's sweep (every 5 s) expires it
        for ws in (wa, wb):
            event = next_event(ws, timeout=15)
            assert (event["type"], event["id"], event["state"]) == (
                "invite_answer", sent["id"], "expired")
        assert_quiet(wa)


def test_only_buddies_can_be_invited(server: RunningServer, http: httpx.Client,
                                     client: Client) -> None:
    a, b = buddies(server, http, client)
    stranger = login(server, http, client)
    with stream(server, stranger.access, since=0) as ws:
        assert_api_error(invite(a, stranger.username, join_url="https://a.example/j"),
                         403, "forbidden")
        assert_quiet(ws)
    assert_api_error(invite(a, "ghost-nobody", join_url="https://a.example/j"), 404, "not_found")
    assert_api_error(invite(a, a.username, join_url="https://a.example/j"), 400, "bad_request")
    assert stranger.get("/v1/invites").json() == {"invites": []}
    assert_api_error(stranger.post("/v1/invites/0123/accept"), 404, "not_found")
    assert b.get("/v1/invites").json() == {"invites": []}


@pytest.mark.parametrize(("body", "code"), [
    ({"join_url": "javascript:alert(1)"}, "invalid_invite"),
    ({"join_url": "https://a.example/" + "x" * 2048}, "invalid_invite"),
    ({"join_url": "https://a.example/j", "message": "m" * 501}, "invalid_invite"),
    ({"join_url": "https://a.example/j", "expires_in": 0}, "invalid_invite"),
    ({"join_url": "https://a.example/j", "client_invite_id": ""}, "invalid_invite"),
    ({"join_url": "https://a.example/j", "extra": 1}, "invalid_invite"),
    ({"activity": {"name": "x" * 129}}, "invalid_activity"),
    ({"activity": {"join": {"url": "data:text/html,hi"}}}, "invalid_activity"),
    ({"activity": {"party": {"size": 9, "max": 2}}}, "invalid_activity"),
])
def test_a_bad_invite_is_refused_and_nothing_stored(server: RunningServer, http: httpx.Client,
                                                    client: Client, body: dict[str, Any],
                                                    code: str) -> None:
    a, b = buddies(server, http, client)
    with stream(server, b.access, since=1) as wb:
        assert_api_error(invite(a, b.username, **body), 400, code)
        assert_api_error(a.post("/v1/invites", json=["x"]), 400, "invalid_invite")
        assert_quiet(wb)
    assert b.get("/v1/invites").json() == {"invites": []}
    assert a.get("/v1/invites").json() == {"invites": []}


@pytest.mark.slow
def test_activity_and_invites_cross_processes(pg_url: str, redis_url: str,
                                              tmp_path: Path) -> None:
    """Two ``interapp serve`` processes on one PostgreSQL and one Redis: an activity set and an
    invite sent through one reach a stream on the other; the answer comes back the same way."""
    app = app_name("richfan")
    with ExitStack() as stack:
        one = stack.enter_context(serve(app, pg_url, redis_url, PUBLIC, tmp_path / "1.log"))
        two = stack.enter_context(serve(app, pg_url, redis_url, PUBLIC, tmp_path / "2.log"))
        client = make_client(pg_url)
        on_one, on_two = Endpoint(one.url, one.ws_url, pg_url), Endpoint(two.url, two.ws_url,
                                                                          pg_url)
        with httpx.Client(base_url=one.url) as http1, httpx.Client(base_url=two.url) as http2:
            alice, bob = login(on_one, http1, client), login(on_two, http2, client)
            make_buddies(pg_url, alice.user, bob.user)
            with stream(on_two, bob.access, since=1) as wb, \
                    stream(on_two, alice.access, since=1) as wa:
                assert alice.put("/v1/presence", json={"activity": ARENA}).status_code == 200
                event = next_event(wb)
                assert (event["type"], event["activity"]) == ("presence", ARENA)
                assert next_event(wa)["activity"] == ARENA  # alice's own other devices
                sent = invite(alice, bob.username, message="gg").json()
                assert next_event(wb) == {"seq": 3, "type": "invite", **sent}
                answer = httpx.post(f"{one.url}/v1/invites/{sent['id']}/accept",
                                    headers=bob.headers())
                assert answer.status_code == 200, answer.text
                got = next_event(wa)
                assert (got["type"], got["state"]) == ("invite_answer", "accepted")
                assert next_event(wb)["type"] == "invite_answer"
            listed = http2.get("/v1/contacts", headers=bob.headers()).json()["contacts"]
            assert listed[0]["activity"] == ARENA
