"""Data survives a restart: stop the server, start a new one on the same database, and logins,
tokens, buddies, history, the event log and the signing key are all still there.
Runs once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from server_kit import (
    RunningServer,
    app_name,
    assert_oauth_error,
    bearer,
    events,
    login,
    make_buddies,
    make_client,
    make_user,
    password_login,
    stream,
)


def test_everything_survives_a_restart(db_url: str) -> None:
    name = app_name("persist")
    with RunningServer(name, db_url) as first, first.client() as http:
        client = make_client(db_url)
        a, b = login(first, http, client), login(first, http, client)
        make_buddies(db_url, a.user, b.user)
        sent = [a.post("/v1/messages", json={"to": b.username, "body": f"before {i}",
                                             "client_msg_id": f"r{i}"}).json()
                for i in range(3)]
        a.put("/v1/presence", json={"state": "away", "status_text": "brb"})
        jwks = http.get("/.well-known/jwks.json").json()
        rotated = http.post("/oauth/token", auth=client.basic(), data={
            "grant_type": "refresh_token", "refresh_token": b.tokens["refresh_token"]}).json()
        port = first.port

    try:  # the same port if it is still free, so the issuer stays the same too
        second = RunningServer(name, db_url, port=port)
    except Exception:
        second = RunningServer(name, db_url)
    with second, second.client() as http:
        assert http.get("/.well-known/jwks.json").json() == jwks
        # Tokens issued before the restart still work.
        me = http.get("/v1/me", headers=bearer(a.access))
        assert me.status_code == 200
        assert me.json()["presence"] == "away" and me.json()["status_text"] == "brb"
        # The password still works; so does the client's secret.
        fresh = password_login(http, client, a.username)
        assert http.get("/v1/me", headers=bearer(fresh["access_token"])).json()["id"] == a.user.id
        # History and buddies are there.
        history = http.get(f"/v1/conversations/{a.username}/messages",
                           headers=bearer(rotated["access_token"])).json()["messages"]
        assert history == sent
        contacts = http.get("/v1/contacts", headers=bearer(a.access)).json()["contacts"]
        assert [c["username"] for c in contacts] == [b.username]
        # The rotation state survived: re-using b's first refresh token kills the family.
        reuse = http.post("/oauth/token", auth=client.basic(), data={
            "grant_type": "refresh_token", "refresh_token": b.tokens["refresh_token"]})
        assert_oauth_error(reuse, 400, "invalid_grant")
        assert http.get("/v1/me", headers=bearer(rotated["access_token"])).status_code == 401
        # Idempotency keys survived: the same client_msg_id is still the same message.
        again = http.post("/v1/messages", headers=bearer(a.access), json={
            "to": b.username, "body": "before 0", "client_msg_id": "r0"})
        assert again.status_code == 201 and again.json() == sent[0]
        # The event log continues where it was: contact_added, 3 messages, presence, then new.
        with stream(second, a.access, since=0) as ws:
            log = events(ws, 5)
            assert [e["seq"] for e in log] == [1, 2, 3, 4, 5]
            assert [e["type"] for e in log] == ["contact_added", "message", "message", "message",
                                                "presence"]
            new = httpx.post(f"{second.url}/v1/messages", headers=bearer(a.access), json={
                "to": b.username, "body": "after"})
            assert new.status_code == 201
            assert events(ws, 1)[0]["seq"] == 6


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_first_starts_create_the_schema_once(backend: str, tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    """Several server processes starting at once on an empty database all come up."""
    url = (f"sqlite:///{tmp_path / 'race.db'}" if backend == "sqlite"
           else str(request.getfixturevalue("pg_url")))
    # Each process imports everything, says it is ready, then all migrate at the same moment.
    code = ("import os, sys, time\n"
            "from interapp.server.storage.db import migrate\n"
            "open(sys.argv[2], 'w').close()\n"
            "while not os.path.exists(sys.argv[3]): time.sleep(0.002)\n"
            "migrate(sys.argv[1])\n")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", code, url, str(tmp_path / f"ready{i}"),
                               str(go)], stderr=subprocess.PIPE, text=True) for i in range(4)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(4)):
        assert time.monotonic() < deadline, "the migrating processes did not start"
        time.sleep(0.01)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    with RunningServer(app_name("race"), url) as srv, srv.client() as http:
        user = make_user(url)
        assert password_login(http, make_client(url), user.username)["token_type"] == "Bearer"
