"""Concurrent writers that touch the same account: no deadlock, no 503, every event once.
(On PostgreSQL, inserting contacts takes KEY SHARE locks on both users; the event log must
lock account rows FOR NO KEY UPDATE, or two such requests deadlock.) SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import httpx
from server_kit import Client, RunningServer, Session, events, login, stream


def test_simultaneous_buddy_requests_to_one_user(server: RunningServer, http: httpx.Client,
                                                 client: Client) -> None:
    target = login(server, http, client)
    askers: list[Session] = [login(server, http, client) for _ in range(8)]
    barrier = threading.Barrier(len(askers))
    answers: list[int] = []

    def ask(s: Session) -> None:
        barrier.wait()
        answers.append(s.post("/v1/contacts", json={"username": target.username}).status_code)

    with stream(server, target.access, since=0) as ws:
        threads = [threading.Thread(target=ask, args=(s,)) for s in askers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(answers) == [201] * len(askers), answers
        got = events(ws, len(askers))
    assert sorted(e["seq"] for e in got) == list(range(1, len(askers) + 1))
    assert {e["from"] for e in got} == {s.username for s in askers}
