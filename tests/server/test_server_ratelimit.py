"""Failed password logins are limited per account and per client address (429 + Retry-After),
and a locked account does not reveal whether a password was right."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import redis
from server_kit import (
    PASSWORD,
    Client,
    RunningServer,
    app_name,
    assert_oauth_error,
    make_client,
    make_user,
)


def attempt(http: httpx.Client, client: Client, username: str, password: str) -> httpx.Response:
    return http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "password", "username": username, "password": password})


def assert_locked(resp: httpx.Response, window: int) -> dict[str, str]:
    body = assert_oauth_error(resp, 429, "slow_down")
    assert 1 <= int(resp.headers["retry-after"]) <= window
    return body


def test_account_lock_hides_the_password_and_expires(tmp_path: Path) -> None:
    window = 4
    with RunningServer(app_name("rl"), f"sqlite:///{tmp_path / 'rl.db'}",
                       login_failures_per_account=3, login_failures_per_address=50,
                       login_window_seconds=window) as srv, srv.client() as http:
        client = make_client(srv.db_url)
        victim, bystander = make_user(srv.db_url), make_user(srv.db_url)
        for _ in range(3):
            assert_oauth_error(attempt(http, client, victim.username, "guess"),
                               400, "invalid_grant")
        right = attempt(http, client, victim.username, PASSWORD)
        wrong = attempt(http, client, victim.username, "guess")
        assert assert_locked(right, window) == assert_locked(wrong, window)  # no difference
        assert right.headers["retry-after"].isdigit()
        # Case does not get around the lock.
        assert_locked(attempt(http, client, victim.username.upper(), PASSWORD), window)
        # Other accounts are not affected.
        assert attempt(http, client, bystander.username, PASSWORD).status_code == 200
        # Retry-After tells the truth: after it, the right password works again.
        time.sleep(int(right.headers["retry-after"]) + 0.2)
        assert attempt(http, client, victim.username, PASSWORD).status_code == 200


def test_success_clears_the_account_counter(tmp_path: Path) -> None:
    with RunningServer(app_name("rl"), f"sqlite:///{tmp_path / 'rl.db'}",
                       login_failures_per_account=3, login_failures_per_address=50) as srv, \
            srv.client() as http:
        client = make_client(srv.db_url)
        user = make_user(srv.db_url)
        for _ in range(2):
            attempt(http, client, user.username, "guess")
        assert attempt(http, client, user.username, PASSWORD).status_code == 200
        for _ in range(2):
            assert attempt(http, client, user.username, "guess").status_code == 400
        assert attempt(http, client, user.username, PASSWORD).status_code == 200


def test_address_lock(tmp_path: Path) -> None:
    with RunningServer(app_name("rl"), f"sqlite:///{tmp_path / 'rl.db'}",
                       login_failures_per_account=50, login_failures_per_address=4) as srv, \
            srv.client() as http:
        client = make_client(srv.db_url)
        for i in range(4):  # spraying many accounts from one address
            assert attempt(http, client, f"spray{i}", "guess").status_code == 400
        fresh = make_user(srv.db_url)
        assert_locked(attempt(http, client, fresh.username, PASSWORD), 300)


def test_limits_hold_across_processes_with_redis(tmp_path: Path, redis_url: str) -> None:
    """Two servers on one database and one Redis share the counters."""
    name = app_name("rl")
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    settings = {"redis_url": redis_url, "login_failures_per_account": 2,
                "login_failures_per_address": 50, "login_window_seconds": 60}
    try:
        with RunningServer(name, db, **settings) as one, RunningServer(name, db, **settings) as two:
            client = make_client(db)
            user = make_user(db)
            with one.client() as h1, two.client() as h2:
                assert attempt(h1, client, user.username, "guess").status_code == 400
                assert attempt(h2, client, user.username, "guess").status_code == 400
                assert_locked(attempt(h1, client, user.username, PASSWORD), 60)
                assert_locked(attempt(h2, client, user.username, PASSWORD), 60)
    finally:
        r = redis.Redis.from_url(redis_url)
        for key in r.scan_iter(f"interapp:{name}:*"):
            r.delete(key)
        r.close()
