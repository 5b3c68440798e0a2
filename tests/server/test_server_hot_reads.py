"""The hot reads (``GET /v1/contacts``, ``GET /v1/me``) served from the per-account page cache
(``interapp.server.api.hotreads``): the same bytes as FastAPI's answer, never stale — whoever
made the change, this server or another process on the same database — and a revoked token is
refused at once. On SQLite and PostgreSQL, against the real server on a real socket.
"""

from __future__ import annotations

import httpx
from server_kit import (
    Client,
    RunningServer,
    assert_api_error,
    buddies,
    db_run,
    login,
    make_buddies,
)

from interapp.server.api.hotreads import PageCache
from interapp.server.oauth import issue


def cache(server: RunningServer) -> PageCache:
    pages: PageCache = server.asgi.state.hot_reads
    return pages


def same_answer(a: httpx.Response, b: httpx.Response) -> None:
    """Status, headers (but the date) and body byte for byte."""
    assert a.status_code == b.status_code
    assert [(k, v) for k, v in a.headers.items() if k != "date"] == \
        [(k, v) for k, v in b.headers.items() if k != "date"]
    assert a.content == b.content


def test_a_repeated_read_comes_from_the_cache_with_fastapis_bytes(
        server: RunningServer, http: httpx.Client, client: Client) -> None:
    a, _b = buddies(server, http, client)
    pages = cache(server)
    for path in ("/v1/contacts", "/v1/me"):
        first = a.get(path)
        hits = pages.hits
        again = a.get(path)
        assert pages.hits == hits + 1, f"{path} was not answered from the cache"
        # a query string always goes through FastAPI: the reference answer
        reference = a.get(path, params={"limit": "100"} if path == "/v1/contacts" else None)
        same_answer(again, first)
        if path == "/v1/contacts":
            same_answer(again, reference)
    assert 0 < pages.bytes <= pages.max_bytes


def test_a_buddys_presence_change_is_seen_at_once(
        server: RunningServer, http: httpx.Client, client: Client) -> None:
    a, b = buddies(server, http, client)
    assert a.get("/v1/contacts").json()["contacts"][0]["presence"] == "offline"
    a.get("/v1/contacts")  # cached now
    assert b.put("/v1/presence", json={"state": "busy", "status_text": "in a match"}
                 ).status_code == 200
    (buddy,) = a.get("/v1/contacts").json()["contacts"]
    assert (buddy["presence"], buddy["status_text"]) == ("busy", "in a match")
    assert b.get("/v1/me").json()["presence"] == "busy"


def test_a_change_made_by_another_process_is_seen_at_once(
        server: RunningServer, http: httpx.Client, client: Client) -> None:
    a, b = buddies(server, http, client)
    c = login(server, http, client)
    assert [x["username"] for x in a.get("/v1/contacts").json()["contacts"]] == [b.username]
    a.get("/v1/contacts")
    make_buddies(server.db_url, a.user, c.user)  # its own engine, as `interapp admin` does
    names = sorted(x["username"] for x in a.get("/v1/contacts").json()["contacts"])
    assert names == sorted([b.username, c.username])


def test_a_revoked_token_is_refused_at_once(
        server: RunningServer, http: httpx.Client, client: Client) -> None:
    a, _b = buddies(server, http, client)
    for path in ("/v1/contacts", "/v1/me"):
        assert a.get(path).status_code == 200
        assert a.get(path).status_code == 200  # from the cache
    refused_before = http.get("/v1/contacts", headers={"Authorization": "Bearer nope"})
    db_run(server.db_url, lambda conn: issue.revoke_user(conn, a.user.id))  # another process
    for path in ("/v1/contacts", "/v1/me"):
        resp = http.get(path, headers=a.headers())
        assert_api_error(resp, 401, "unauthorized")
        same_answer(resp, refused_before)


def test_malformed_authorization_is_answered_as_before(
        server: RunningServer, http: httpx.Client, client: Client) -> None:
    a, _b = buddies(server, http, client)
    a.get("/v1/contacts")
    for header in (f"Basic {a.access}", "Bearer", f"bearer  {a.access}", f"Bearer {a.access}x"):
        resp = http.get("/v1/contacts", headers={"Authorization": header})
        with_query = http.get("/v1/contacts", params={"limit": "100"},
                              headers={"Authorization": header})
        assert resp.status_code == with_query.status_code, header
        assert resp.json() == with_query.json(), header


def test_the_cache_is_bounded() -> None:
    from interapp.server.api.hotreads import _Page

    pages = PageCache(max_bytes=8_000)
    for i in range(50):
        pages.put(("/v1/contacts", f"u{i}"), _Page(1, {}, b"x" * 900))
    assert pages.bytes <= 8_000 and len(pages) == 8
    assert pages.get(("/v1/contacts", "u49"), 1) is not None
    assert pages.get(("/v1/contacts", "u0"), 1) is None  # dropped first
    assert pages.get(("/v1/contacts", "u49"), 2) is None  # another seq: a miss
