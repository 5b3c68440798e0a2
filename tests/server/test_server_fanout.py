"""Several real ``interapp serve`` processes on one PostgreSQL database and one Redis: a stream
connected to one process receives every event caused through the other, each ``seq`` exactly
once and in order."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from server_kit import (
    Endpoint,
    app_name,
    assert_quiet,
    bearer,
    events,
    login,
    make_buddies,
    make_client,
    serve,
    stream,
)


@pytest.mark.slow
def test_events_cross_processes_exactly_once(pg_url: str, redis_url: str,
                                             tmp_path: Path) -> None:
    app = app_name("fanout")
    public = "http://fanout.interapp.test"
    with ExitStack() as stack:
        # Both start at once on the empty database: the schema is created exactly once.
        a = stack.enter_context(serve(app, pg_url, redis_url, public, tmp_path / "a.log"))
        b = stack.enter_context(serve(app, pg_url, redis_url, public, tmp_path / "b.log"))
        assert a.url != b.url
        for proc in (a, b):
            meta = httpx.get(f"{proc.url}/.well-known/oauth-authorization-server").json()
            assert meta["issuer"] == public

        client = make_client(pg_url)
        handle_a = Endpoint(a.url, a.ws_url, pg_url)
        handle_b = Endpoint(b.url, b.ws_url, pg_url)
        with httpx.Client(base_url=a.url) as http_a, httpx.Client(base_url=b.url) as http_b:
            alice = login(handle_a, http_a, client)
            bob = login(handle_b, http_b, client)
            make_buddies(pg_url, alice.user, bob.user)  # seq 1 for both
            with stream(handle_a, alice.access, since=1) as on_a, \
                    stream(handle_b, alice.access, since=1) as on_b:
                for i in range(30):
                    resp = http_b.post("/v1/messages", headers=bob.headers(), json={
                        "to": alice.username, "body": f"via-b {i}", "client_msg_id": f"f{i}"})
                    assert resp.status_code == 201, resp.text
                # The same message sent again through A: idempotent across processes.
                dup = http_a.post("/v1/messages", headers=bob.headers(), json={
                    "to": alice.username, "body": "via-b 0", "client_msg_id": "f0"})
                assert dup.status_code == 201
                for ws in (on_a, on_b):
                    got = events(ws, 30)
                    assert [e["seq"] for e in got] == list(range(2, 32))
                    assert [e["body"] for e in got] == [f"via-b {i}" for i in range(30)]
                    assert_quiet(ws, 0.5)
                # And the other way round: bob's presence set through A reaches alice on B.
                resp = http_a.put("/v1/presence", headers=bob.headers(),
                                  json={"state": "busy", "status_text": "ranked match"})
                assert resp.status_code == 200
                for ws in (on_a, on_b):
                    event = events(ws, 1)[0]
                    assert event == {"seq": 32, "type": "presence", "username": bob.username,
                                     "state": "busy", "status_text": "ranked match",
                                     "activity": None}
            # A token issued by one process works on the other.
            assert httpx.get(f"{b.url}/v1/me", headers=bearer(alice.access)).status_code == 200
    for proc in (a, b):
        assert proc.proc.returncode is not None  # both stopped

