"""``interapp serve --workers N``: several processes on one port, PostgreSQL and Redis; Prometheus
metrics summed over the workers; JSON-lines logs with no secrets in them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from server_kit import (
    INTERAPP,
    PASSWORD,
    Endpoint,
    app_name,
    assert_quiet,
    events,
    login,
    make_buddies,
    make_client,
    serve,
    stream,
)


@pytest.mark.slow
def test_two_workers_share_the_port_and_deliver_every_event_once(
        pg_url: str, redis_url: str, tmp_path: Path) -> None:
    app = app_name("workers")
    log = tmp_path / "serve.log"
    with serve(app, pg_url, redis_url, None, log,
               extra=("--workers", "2", "--log-level", "info")) as srv:
        client = make_client(pg_url)
        handle = Endpoint(srv.url, srv.ws_url, pg_url)
        with httpx.Client(base_url=srv.url) as http:
            alice = login(handle, http, client)
            bob = login(handle, http, client)
        make_buddies(pg_url, alice.user, bob.user)  # seq 1
        pids = set()
        with stream(handle, alice.access, since=1) as ws:
            for i in range(40):  # a new connection each time: the kernel spreads them
                with httpx.Client(base_url=srv.url) as http:
                    resp = http.post("/v1/messages", headers=bob.headers(), json={
                        "to": alice.username, "body": f"m{i}", "client_msg_id": f"w{i}"})
                    assert resp.status_code == 201, resp.text
                    pids.add(http.get("/healthz").headers.get("x-interapp-worker"))
            got = events(ws, 40)
            assert [e["seq"] for e in got] == list(range(2, 42))
            assert [e["body"] for e in got] == [f"m{i}" for i in range(40)]
            assert_quiet(ws, 0.5)
        assert len(pids - {None}) == 2, pids  # both workers answered
        metrics = httpx.get(f"{srv.url}/metrics").text
        logins = [line for line in metrics.splitlines()
                  if line.startswith('interapp_logins_total{grant="password",outcome="ok"}')]
        assert logins and float(logins[0].split()[-1]) == 2.0  # summed over both workers
        assert 'route="/v1/messages"' in metrics
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert any(r.get("route") == "/v1/messages" and r.get("status") == 201 for r in records)
    text = log.read_text()
    for secret in (PASSWORD, alice.access, bob.access, client.secret or "-"):
        assert secret not in text


def test_workers_need_postgresql_and_redis(tmp_path: Path) -> None:
    env = {"INTERAPP_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    no_redis = subprocess.run([INTERAPP, "serve", "--app", "w", "--workers", "2"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert no_redis.returncode != 0
    assert no_redis.stderr.count("\n") == 1 and "--redis" in no_redis.stderr
    sqlite = subprocess.run([INTERAPP, "serve", "--app", "w", "--workers", "2", "--redis",
                             "redis://127.0.0.1:6379/0"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert sqlite.returncode != 0 and "PostgreSQL" in sqlite.stderr
