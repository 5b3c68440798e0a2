"""The ``/v1`` API end to end over a real socket: profile, buddies (with pagination and the
request/accept/delete flow and its events), presence, messages, history, account isolation.

Runs once on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from server_kit import (
    Client,
    RunningServer,
    assert_api_error,
    assert_quiet,
    buddies,
    login,
    make_buddies,
    make_user,
    make_users,
    next_event,
    stream,
)

PROFILE_KEYS = {"id", "username", "display_name", "presence", "status_text", "activity"}
MESSAGE_KEYS = {"message_id", "client_msg_id", "from", "to", "body", "sent_at"}


def test_v1_requires_a_live_bearer_token(http: httpx.Client) -> None:
    resp = http.get("/v1/me")
    assert_api_error(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert_api_error(http.get("/v1/me", headers={"Authorization": "Bearer ia_at_nope"}),
                     401, "unauthorized")
    assert_api_error(http.get("/v1/contacts", headers={"Authorization": "Basic eDp5"}),
                     401, "unauthorized")
    assert_api_error(http.post("/v1/messages", json={"to": "x", "body": "y"}),
                     401, "unauthorized")


def test_me(server: RunningServer, http: httpx.Client, client: Client) -> None:
    user = make_user(server.db_url, display_name="  Zoe Q  ")
    me = login(server, http, client, user).get("/v1/me")
    assert me.status_code == 200
    assert me.json() == {"id": user.id, "username": user.username, "display_name": "Zoe Q",
                         "presence": "offline", "status_text": "", "activity": None}


def test_contacts_pagination(server: RunningServer, http: httpx.Client, client: Client) -> None:
    me = login(server, http, client)
    friends = make_users(server.db_url, 7, "pal")
    for friend in friends:
        make_buddies(server.db_url, me.user, friend)
    outsider = make_user(server.db_url)  # not a buddy: never listed
    make_buddies(server.db_url, outsider, friends[0])

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = []
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        resp = me.get("/v1/contacts", params=params)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert set(page) == {"contacts", "next_cursor"}
        pages.append(len(page["contacts"]))
        for item in page["contacts"]:
            assert set(item) == PROFILE_KEYS
        seen.extend(page["contacts"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [3, 3, 1]
    names = [c["username"] for c in seen]
    assert names == sorted(f.username for f in friends)
    assert {c["id"] for c in seen} == {f.id for f in friends}
    assert all(c["presence"] == "offline" for c in seen)
    whole = me.get("/v1/contacts").json()
    assert [c["username"] for c in whole["contacts"]] == names
    assert whole["next_cursor"] is None


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"limit": "many"},
                                    {"cursor": "A"}])
def test_contacts_bad_query(server: RunningServer, http: httpx.Client, client: Client,
                            params: dict[str, Any]) -> None:
    me = login(server, http, client)
    assert_api_error(me.get("/v1/contacts", params=params), 400, "bad_request")


def test_contact_request_accept_delete_flow(server: RunningServer, http: httpx.Client,
                                            client: Client) -> None:
    a, b = login(server, http, client), login(server, http, client)
    with stream(server, a.access, since=0) as wa, stream(server, b.access, since=0) as wb:
        resp = a.post("/v1/contacts", json={"username": b.username})
        assert resp.status_code == 201, resp.text
        assert resp.json() == {**b.user.profile(), "state": "pending"}
        req = next_event(wb)
        assert req == {"seq": 1, "type": "contact_request", "from": a.username, "id": a.user.id,
                       "display_name": a.user.display_name}
        assert_quiet(wa)

        assert b.get("/v1/contacts/requests").json() == {"requests": [{
            "id": a.user.id, "username": a.username, "display_name": a.user.display_name,
            "direction": "incoming"}]}
        assert a.get("/v1/contacts/requests").json()["requests"][0]["direction"] == "outgoing"
        assert a.get("/v1/contacts").json()["contacts"] == []

        # Asking again changes nothing; the asker cannot accept their own request.
        again = a.post("/v1/contacts", json={"username": b.username})
        assert again.status_code == 201 and again.json()["state"] == "pending"
        assert_api_error(a.post(f"/v1/contacts/{b.user.id}/accept"), 409, "conflict")

        resp = b.post(f"/v1/contacts/{a.user.id}/accept")
        assert resp.status_code == 200, resp.text
        assert resp.json() == {**a.user.profile(), "state": "accepted"}
        added_b = next_event(wb)
        added_a = next_event(wa)
        assert added_b == {"seq": 2, "type": "contact_added", "contact": a.user.profile()}
        assert added_a == {"seq": 1, "type": "contact_added", "contact": b.user.profile()}
        assert [c["id"] for c in a.get("/v1/contacts").json()["contacts"]] == [b.user.id]
        assert [c["id"] for c in b.get("/v1/contacts").json()["contacts"]] == [a.user.id]
        assert b.get("/v1/contacts/requests").json() == {"requests": []}
        assert_api_error(a.post("/v1/contacts", json={"username": b.username}),
                         409, "conflict")

        resp = a.delete(f"/v1/contacts/{b.user.id}")
        assert resp.status_code == 204 and resp.content == b""
        assert next_event(wa) == {"seq": 2, "type": "contact_removed", "id": b.user.id,
                                  "username": b.username}
        assert next_event(wb)["type"] == "contact_removed"
        assert a.get("/v1/contacts").json()["contacts"] == []
        assert b.get("/v1/contacts").json()["contacts"] == []
        assert_api_error(a.delete(f"/v1/contacts/{b.user.id}"), 404, "not_found")


def test_crossed_requests_become_buddies(server: RunningServer, http: httpx.Client,
                                         client: Client) -> None:
    a, b = login(server, http, client), login(server, http, client)
    assert a.post("/v1/contacts", json={"username": b.username}).json()["state"] == "pending"
    resp = b.post("/v1/contacts", json={"username": a.username})
    assert resp.status_code == 201 and resp.json()["state"] == "accepted"
    assert [c["id"] for c in a.get("/v1/contacts").json()["contacts"]] == [b.user.id]


def test_declining_a_request(server: RunningServer, http: httpx.Client, client: Client) -> None:
    a, b = login(server, http, client), login(server, http, client)
    a.post("/v1/contacts", json={"username": b.username})
    assert b.delete(f"/v1/contacts/{a.user.id}").status_code == 204
    assert a.get("/v1/contacts/requests").json() == {"requests": []}
    assert_api_error(b.post(f"/v1/contacts/{a.user.id}/accept"), 404, "not_found")


def test_contact_request_errors(server: RunningServer, http: httpx.Client,
                                client: Client) -> None:
    a = login(server, http, client)
    assert_api_error(a.post("/v1/contacts", json={"username": "nobody-here"}), 404, "not_found")
    assert_api_error(a.post("/v1/contacts", json={"username": a.username}), 400, "bad_request")
    assert_api_error(a.post("/v1/contacts", json={"username": ""}), 400, "bad_request")
    assert_api_error(a.post("/v1/contacts", json={"user": a.username}), 400, "bad_request")
    assert_api_error(a.post("/v1/contacts/0123/accept"), 404, "not_found")


def test_presence_reaches_buddies(server: RunningServer, http: httpx.Client,
                                  client: Client) -> None:
    a, b = buddies(server, http, client)
    stranger = login(server, http, client)
    with stream(server, b.access, since=1) as wb, \
            stream(server, stranger.access, since=0) as ws_stranger:
        resp = a.put("/v1/presence", json={"state": "busy", "status_text": "in a match: 3-1"})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {**a.user.profile(), "presence": "busy",
                               "status_text": "in a match: 3-1"}
        event = next_event(wb)
        assert event == {"seq": 2, "type": "presence", "username": a.username, "state": "busy",
                         "status_text": "in a match: 3-1", "activity": None}
        assert_quiet(ws_stranger)
    assert a.get("/v1/me").json()["presence"] == "busy"
    listed = b.get("/v1/contacts").json()["contacts"][0]
    assert (listed["presence"], listed["status_text"]) == ("busy", "in a match: 3-1")
    # Without status_text the text is cleared.
    assert a.put("/v1/presence", json={"state": "away"}).json()["status_text"] == ""


@pytest.mark.parametrize("body", [{"state": "invisible"}, {"status_text": "x"},
                                  {"state": "online", "status_text": "x" * 257},
                                  {"state": "online", "extra": 1}, ["online"]])
def test_presence_validation(server: RunningServer, http: httpx.Client, client: Client,
                             body: Any) -> None:
    a = login(server, http, client)
    assert_api_error(a.put("/v1/presence", json=body), 400, "bad_request")


def test_messages_idempotent_and_buddies_only(server: RunningServer, http: httpx.Client,
                                              client: Client) -> None:
    a, b = buddies(server, http, client)
    stranger = login(server, http, client)
    resp = a.post("/v1/messages", json={"to": b.username, "body": "gg", "client_msg_id": "m-1"})
    assert resp.status_code == 201, resp.text
    msg = resp.json()
    assert set(msg) == MESSAGE_KEYS
    assert (msg["from"], msg["to"], msg["body"], msg["client_msg_id"]) == (
        a.username, b.username, "gg", "m-1")
    assert msg["sent_at"].endswith("Z")
    again = a.post("/v1/messages", json={"to": b.username, "body": "gg", "client_msg_id": "m-1"})
    assert again.status_code == 201
    assert again.json() == msg
    history = b.get(f"/v1/conversations/{a.username}/messages").json()
    assert history == {"messages": [msg], "next_before": None}
    assert_api_error(a.post("/v1/messages", json={"to": b.username, "body": "other",
                                                  "client_msg_id": "m-1"}), 409, "conflict")
    # The same client_msg_id from another sender is another message.
    other = b.post("/v1/messages", json={"to": a.username, "body": "gg", "client_msg_id": "m-1"})
    assert other.status_code == 201 and other.json()["message_id"] != msg["message_id"]
    # Without client_msg_id the server picks one.
    auto = a.post("/v1/messages", json={"to": b.username, "body": "auto"}).json()
    assert auto["client_msg_id"]
    assert_api_error(a.post("/v1/messages", json={"to": stranger.username, "body": "hi"}),
                     403, "forbidden")
    assert_api_error(a.post("/v1/messages", json={"to": "ghost-user", "body": "hi"}),
                     404, "not_found")
    assert_api_error(a.post("/v1/messages", json={"to": a.username, "body": "me"}),
                     403, "forbidden")
    assert_api_error(a.post("/v1/messages", json={"to": b.username, "body": ""}),
                     400, "bad_request")
    assert_api_error(a.post("/v1/messages", json={"to": b.username, "body": "x" * 8001}),
                     400, "bad_request")


def test_concurrent_duplicates_make_one_message(server: RunningServer, client: Client) -> None:
    with server.client() as http:
        a, b = buddies(server, http, client)
    results: list[httpx.Response] = []
    barrier = threading.Barrier(6)

    def send() -> None:
        with server.client() as h:
            barrier.wait()
            results.append(h.post("/v1/messages", headers=a.headers(), json={
                "to": b.username, "body": "once", "client_msg_id": "dup-1"}))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r.status_code for r in results] == [201] * 6, [r.text for r in results]
    assert len({r.json()["message_id"] for r in results}) == 1
    with server.client() as http:
        history = http.get(f"/v1/conversations/{a.username}/messages",
                           headers=b.headers()).json()
    assert [m["body"] for m in history["messages"]] == ["once"]


def test_history_pages_newest_last(server: RunningServer, http: httpx.Client,
                                   client: Client) -> None:
    a, b = buddies(server, http, client)
    sent = []
    for i in range(7):
        sender, to = (a, b) if i % 2 == 0 else (b, a)
        resp = sender.post("/v1/messages", json={"to": to.username, "body": f"m{i}",
                                                 "client_msg_id": f"c{i}"})
        assert resp.status_code == 201
        sent.append(resp.json())
    page = a.get(f"/v1/conversations/{b.username}/messages", params={"limit": 3}).json()
    assert [m["body"] for m in page["messages"]] == ["m4", "m5", "m6"]
    assert page["messages"][-1] == sent[-1]
    page2 = a.get(f"/v1/conversations/{b.username}/messages",
                  params={"limit": 3, "before": page["next_before"]}).json()
    assert [m["body"] for m in page2["messages"]] == ["m1", "m2", "m3"]
    page3 = a.get(f"/v1/conversations/{b.username}/messages",
                  params={"limit": 3, "before": page2["next_before"]}).json()
    assert [m["body"] for m in page3["messages"]] == ["m0"]
    assert page3["next_before"] is None
    from_b = b.get(f"/v1/conversations/{a.username}/messages").json()["messages"]
    assert from_b == sent
    assert [m["from"] for m in from_b] == [a.username, b.username] * 3 + [a.username]
    assert_api_error(a.get("/v1/conversations/ghost-user/messages"), 404, "not_found")
    assert_api_error(a.get(f"/v1/conversations/{b.username}/messages", params={"limit": 0}),
                     400, "bad_request")
    assert_api_error(a.get(f"/v1/conversations/{b.username}/messages",
                           params={"before": "x" * 65}), 400, "bad_request")


def test_one_account_never_reads_another(server: RunningServer, http: httpx.Client,
                                         client: Client) -> None:
    a, b = buddies(server, http, client)
    c = login(server, http, client)
    make_buddies(server.db_url, b.user, c.user)
    secret = b.post("/v1/messages", json={"to": c.username, "body": "b-to-c secret"})
    assert secret.status_code == 201
    assert a.get("/v1/me").json()["id"] == a.user.id
    # a's view of "the conversation with c" is a-c (empty), never b-c.
    assert a.get(f"/v1/conversations/{c.username}/messages").json()["messages"] == []
    assert [x["id"] for x in a.get("/v1/contacts").json()["contacts"]] == [b.user.id]
    # a cannot touch the b-c relation.
    assert_api_error(a.delete(f"/v1/contacts/{c.user.id}"), 404, "not_found")
    assert [x["id"] for x in c.get("/v1/contacts").json()["contacts"]] == [b.user.id]
    # a's stream replays only a's events.
    with stream(server, a.access, since=0) as wa:
        first = next_event(wa)
        assert first["type"] == "contact_added" and first["contact"]["id"] == b.user.id
        assert_quiet(wa)
