"""A real ``interapp serve --log-level info``: its log names each event stream opened (uvicorn's
``"WebSocket /v1/events?…" [accepted]`` line) without the query's values, so a browser's
single-use ticket never reaches the log — in either log format."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from server_kit import (
    PASSWORD,
    Endpoint,
    app_name,
    assert_quiet,
    login,
    make_client,
    next_event,
    serve,
    stream,
)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_event_tickets_are_not_logged_at_info(tmp_path: Path, fmt: str) -> None:
    db = f"sqlite:///{tmp_path / 'logs.db'}"
    log = tmp_path / "serve.log"
    with serve(app_name("logs"), db, None, None, log,
               extra=("--log-level", "info", "--log-format", fmt)) as srv:
        handle = Endpoint(srv.url, srv.ws_url, db)
        client = make_client(db)
        with httpx.Client(base_url=srv.url, timeout=10) as http:
            alice = login(handle, http, client)
            tickets = [alice.post("/v1/events/ticket").json()["ticket"] for _ in range(2)]
        for ticket in tickets:  # accepted: live streams
            with stream(handle, None, since=0, ticket=ticket) as ws:
                assert_quiet(ws, 0.1)
        with stream(handle, None, ticket="ia-not-a-ticket-" + "z" * 20) as ws:
            assert next_event(ws)["error"] == "unauthorized"
    text = log.read_text()
    accepted = [line for line in text.splitlines() if "WebSocket /v1/events?" in line]
    assert len(accepted) >= 3, text  # the lines are still there ...
    assert all("ticket=[redacted]" in line for line in accepted), accepted
    for secret in (*tickets, "z" * 20, alice.access, PASSWORD, client.secret or "-"):
        assert secret not in text  # ... without the ticket, or any other secret
    if fmt == "json":
        assert all(json.loads(line)["logger"].startswith(("uvicorn", "interapp"))
                   for line in text.splitlines() if line.strip())
