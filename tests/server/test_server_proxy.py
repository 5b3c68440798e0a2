"""Behind a reverse proxy: ``interapp serve --forwarded-allow-ips`` takes the client address from
``X-Forwarded-For`` — only on connections from the proxies named — and the per-address login
limit counts failures against that address. Without the flag the header means nothing.

Real ``interapp serve`` processes; this test process plays both the proxy (connecting from
127.0.0.1, the trusted address) and a client reaching the server directly from another
loopback address (127.0.0.2), which may send the header too but is not believed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from server_kit import (
    INTERAPP,
    PASSWORD,
    Client,
    ServeProcess,
    app_name,
    make_client,
    make_users,
    serve,
)

ADDRESS_LIMIT = 30  # failed logins per client address and window (ServerSettings' default)


@contextmanager
def from_address(srv: ServeProcess, local: str) -> Iterator[httpx.Client]:
    """An HTTP client whose connections leave from ``local`` (a loopback address)."""
    with httpx.Client(base_url=srv.url, timeout=30,
                      transport=httpx.HTTPTransport(local_address=local)) as http:
        yield http


def login(http: httpx.Client, client: Client, username: str, password: str,
          forwarded_for: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    resp = http.post("/oauth/token", auth=client.basic(), headers=headers, data={
        "grant_type": "password", "username": username, "password": password})
    assert resp.status_code in (200, 400, 429), resp.text
    return resp.status_code


def spray(http: httpx.Client, client: Client, forwarded_for: str | None) -> None:
    """Use up one address's failures (a different account each time: no account lock)."""
    for i in range(ADDRESS_LIMIT):
        assert login(http, client, f"nobody{i}", "guess", forwarded_for) == 400


def test_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'proxy.db'}"
    users = iter(make_users(db, 4))
    with serve(app_name("proxy"), db, None, None, tmp_path / "serve.log",
               extra=("--forwarded-allow-ips", "127.0.0.1")) as srv:
        client = make_client(db)
        with from_address(srv, "127.0.0.1") as proxy:
            spray(proxy, client, "203.0.113.7")  # one client behind the proxy locks itself out
            assert login(proxy, client, next(users).username, PASSWORD, "203.0.113.7") == 429
            # ... and only itself: another client behind the same proxy, and the proxy's own
            # address, still log in (before, every client behind nginx was 127.0.0.1)
            assert login(proxy, client, next(users).username, PASSWORD, "198.51.100.9") == 200
            assert login(proxy, client, next(users).username, PASSWORD, None) == 200
        with from_address(srv, "127.0.0.2") as direct:
            # not the proxy: its header is ignored, its failures count against 127.0.0.2,
            # however many addresses it claims to have
            for i in range(ADDRESS_LIMIT):
                assert login(direct, client, f"nobody{i}", "guess", f"192.0.2.{i}") == 400
            assert login(direct, client, next(users).username, PASSWORD, "192.0.2.200") == 429


def test_without_the_flag_the_header_is_ignored(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'noproxy.db'}"
    user = make_users(db, 1)[0]
    with serve(app_name("noproxy"), db, None, None, tmp_path / "serve.log") as srv:
        client = make_client(db)
        with from_address(srv, "127.0.0.1") as http:
            spray(http, client, "203.0.113.7")
            # the header named another client, but the server counted the peer: locked
            assert login(http, client, user.username, PASSWORD, "198.51.100.9") == 429


@pytest.mark.parametrize("value", ["*", "proxy.internal", "10.0.0.0/33", ","])
def test_only_addresses_and_networks_are_trusted(tmp_path: Path, value: str) -> None:
    out = subprocess.run([INTERAPP, "serve", "--app", "p", "--forwarded-allow-ips", value],
                         env={"INTERAPP_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert out.stderr.count("\n") == 1 and "--forwarded-allow-ips" in out.stderr
