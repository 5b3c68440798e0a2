"""Failed password logins are limited per account and per client address (429 + Retry-After),
and a locked account does not reveal whether a password was right."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
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


# --- bursts: the attempt is reserved before the password is verified (issue 16, item 1) -------


@contextmanager
def _servers(tmp_path: Path, backend: str, redis_url: str, **limits: int) -> Iterator[
        list[RunningServer]]:
    """One server with in-memory counters, or two processes' worth sharing Redis."""
    name = app_name("burst")
    db = f"sqlite:///{tmp_path / 'burst.db'}"
    settings: dict[str, Any] = {"login_window_seconds": 300, **limits}
    if backend == "memory":
        with RunningServer(name, db, **settings) as srv:
            yield [srv]
        return
    settings["redis_url"] = redis_url
    try:
        with RunningServer(name, db, **settings) as one, RunningServer(name, db, **settings) as two:
            yield [one, two]
    finally:
        r = redis.Redis.from_url(redis_url)
        for key in r.scan_iter(f"interapp:{name}:*"):
            r.delete(key)
        r.close()


async def _burst(servers: list[RunningServer], client: Client,
                 attempts: list[tuple[str, str]]) -> list[int]:
    """Send every (username, password) at once, spread over the servers; the statuses."""
    async with contextlib.AsyncExitStack() as stack:
        https = [await stack.enter_async_context(httpx.AsyncClient(
            base_url=s.url, timeout=60, limits=httpx.Limits(max_connections=200)))
            for s in servers]
        sends = [https[i % len(https)].post("/oauth/token", auth=client.basic(), data={
            "grant_type": "password", "username": user, "password": password})
            for i, (user, password) in enumerate(attempts)]
        return [r.status_code for r in await asyncio.gather(*sends)]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_burst_for_one_account_is_verified_at_most_the_limit(
        tmp_path: Path, backend: str, redis_url: str) -> None:
    with _servers(tmp_path, backend, redis_url, login_failures_per_account=5,
                  login_failures_per_address=1000) as servers:
        client = make_client(servers[0].db_url)
        user = make_user(servers[0].db_url)
        statuses = asyncio.run(_burst(servers, client, [(user.username, "guess")] * 25))
        assert sorted(statuses) == [400] * 5 + [429] * 20, statuses


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_burst_from_one_address_is_verified_at_most_the_limit(
        tmp_path: Path, backend: str, redis_url: str) -> None:
    with _servers(tmp_path, backend, redis_url, login_failures_per_account=5,
                  login_failures_per_address=30) as servers:
        client = make_client(servers[0].db_url)
        sprayed = [(f"spray{i}", "guess") for i in range(80)]  # many accounts, one address
        statuses = asyncio.run(_burst(servers, client, sprayed))
        assert sorted(statuses) == [400] * 30 + [429] * 50, statuses


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_the_right_password_after_a_burst_of_guesses_is_refused(
        tmp_path: Path, backend: str, redis_url: str) -> None:
    """A burst of 12: 11 wrong guesses at once, then — as soon as the first of them is answered,
    while the rest are still being verified — the right password. Only 5 attempts were allowed,
    so the 12th is not let in, right or not."""
    with _servers(tmp_path, backend, redis_url, login_failures_per_account=5,
                  login_failures_per_address=1000, hash_threads=1) as servers:
        client = make_client(servers[0].db_url)
        user = make_user(servers[0].db_url)

        async def main() -> tuple[list[int], int]:
            async with contextlib.AsyncExitStack() as stack:
                https = [await stack.enter_async_context(httpx.AsyncClient(
                    base_url=s.url, timeout=60)) for s in servers]

                async def attempt(i: int, password: str) -> int:
                    resp = await https[i % len(https)].post("/oauth/token", auth=client.basic(),
                                                            data={"grant_type": "password",
                                                                  "username": user.username,
                                                                  "password": password})
                    return resp.status_code

                guesses = [asyncio.ensure_future(attempt(i, "guess")) for i in range(11)]
                # the first answer means the burst is under way: a 429 needs five reservations
                # before it, a 400 a whole verification
                await asyncio.wait(guesses, return_when=asyncio.FIRST_COMPLETED)
                right = await attempt(11, PASSWORD)
                return list(await asyncio.gather(*guesses)), right

        guesses, right = asyncio.run(main())
        assert right != 200, f"the right password got in after a burst of guesses: {guesses}"
        assert right == 429
        assert sorted(guesses) == [400] * 5 + [429] * 6, guesses
