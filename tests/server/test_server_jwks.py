"""Fetching a trusted issuer's JWKS on behalf of unauthenticated requests (issue 16, item 12):
a failed fetch is remembered (10 junk assertions → at most 1 outbound fetch), the response size
is capped, and plain http is refused off loopback — before any connection is made.

The issuer is a real HTTP server on 127.0.0.1 that counts the requests it gets and answers what
the test tells it to (an error, junk, or a JWKS padded past the cap).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from server_kit import (
    JWT_BEARER,
    RunningServer,
    app_name,
    assert_oauth_error,
    db_run,
    make_client,
    uname,
)

from interapp.errors import ConfigError, InvalidGrant
from interapp.server import accounts
from interapp.server.keys import MAX_JWKS_BYTES, IssuerKeys, check_fetch_url


class KeyHost:
    """``/.well-known/jwks.json`` on a loopback port; ``answer`` is (status, body, chunked)."""

    def __init__(self) -> None:
        self.requests = 0
        self.answer: tuple[int, bytes, bool] = (500, b"down", False)
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                host.requests += 1
                status, body, chunked = host.answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if chunked:  # no Content-Length: the cap must hold while reading
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(body), 8192):
                        part = body[i:i + 8192]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> KeyHost:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def keyhost() -> Iterator[KeyHost]:
    with KeyHost() as host:
        yield host


@pytest.fixture
def chat(tmp_path: Path, keyhost: KeyHost) -> Iterator[RunningServer]:
    """A server trusting the key host's issuer, keys fetched from its well-known URL."""
    with RunningServer(app_name("jwks"), f"sqlite:///{tmp_path / 'j.db'}") as srv:
        db_run(srv.db_url, lambda c: accounts.trust_issuer(c, keyhost.url, jwks=None,
                                                            jwks_url=None))
        yield srv


def junk(issuer: str, aud: str) -> str:
    """Well-formed, names the trusted issuer, signed by nobody it trusts."""
    key = ECKey.generate_key("P-256", private=True, auto_kid=True)
    now = int(time.time())
    return jwt.encode({"alg": "ES256", "kid": key.kid}, {
        "iss": issuer, "aud": aud, "sub": uname("junk"), "iat": now, "exp": now + 60,
        "jti": uname("j")}, key)


def test_ten_junk_assertions_make_at_most_one_fetch(chat: RunningServer,
                                                     keyhost: KeyHost) -> None:
    client = make_client(chat.db_url)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=chat.url, timeout=30) as http:
            async def one() -> int:
                resp = await http.post("/oauth/token", auth=(client.client_id, client.secret or ""),
                                       data={"grant_type": JWT_BEARER,
                                             "assertion": junk(keyhost.url, chat.issuer)})
                return resp.status_code
            together = await asyncio.gather(*(one() for _ in range(5)))  # at once
            one_by_one = [await one() for _ in range(5)]
            return [*together, *one_by_one]

    for answer in [(500, b"down", False), (200, b"{not json", False)]:
        keyhost.answer, keyhost.requests = answer, 0
        chat.asgi.state.server.issuer_keys = IssuerKeys()  # forget the previous round
        assert asyncio.run(burst()) == [400] * 10
        assert keyhost.requests <= 1, f"{keyhost.requests} fetches for 10 junk assertions"
        assert keyhost.requests == 1  # and the first one was really tried


@pytest.mark.parametrize("chunked", [False, True])
def test_an_oversize_jwks_is_refused(chat: RunningServer, keyhost: KeyHost,
                                     chunked: bool) -> None:
    key = ECKey.generate_key("P-256", private=True, auto_kid=True)
    public = key.as_dict(private=False)
    padded = json.dumps({"keys": [public], "pad": "x" * (MAX_JWKS_BYTES + 1)}).encode()
    keyhost.answer = (200, padded, chunked)
    now = int(time.time())
    signed = jwt.encode({"alg": "ES256", "kid": key.kid}, {
        "iss": keyhost.url, "aud": chat.issuer, "sub": uname("big"), "iat": now,
        "exp": now + 60, "jti": uname("j")}, key)  # signed by the key the padded JWKS holds
    client = make_client(chat.db_url)
    resp = httpx.post(f"{chat.url}/oauth/token", auth=(client.client_id, client.secret or ""),
                      data={"grant_type": JWT_BEARER, "assertion": signed}, timeout=30)
    assert_oauth_error(resp, 400, "invalid_grant")
    assert keyhost.requests == 1
    # the same key set under the cap is accepted: the size was the reason
    keyhost.answer = (200, json.dumps({"keys": [public]}).encode(), chunked)
    chat.asgi.state.server.issuer_keys = IssuerKeys()
    resp = httpx.post(f"{chat.url}/oauth/token", auth=(client.client_id, client.secret or ""),
                      data={"grant_type": JWT_BEARER, "assertion": signed}, timeout=30)
    assert resp.status_code == 200, resp.text


def test_plain_http_is_refused_off_loopback_before_connecting() -> None:
    for fine in ("https://issuer.example/jwks.json", "http://127.0.0.1:8400/k",
                 "http://127.9.9.9/k", "http://localhost/k", "http://[::1]:1/k"):
        assert check_fetch_url(fine, "u") == fine
    for refused in ("http://issuer.example/jwks.json", "http://10.1.2.3/k",
                    "http://[fe80::1]/k", "ftp://issuer.example/k", "https:///k",
                    "http://127.0.0.1.example/k"):
        with pytest.raises(ConfigError):
            check_fetch_url(refused, "u")

    keys = IssuerKeys()

    async def fetch() -> None:
        await keys._fetch("http://issuer.example/.well-known/jwks.json")

    with pytest.raises(InvalidGrant, match="https"):
        asyncio.run(fetch())
    assert keys.fetches == 0  # refused before any connection was tried


def test_a_stored_http_jwks_url_off_loopback_is_not_fetched(tmp_path: Path) -> None:
    """A trust entry written before the rule (or by hand) is refused at fetch time too."""
    from interapp.server.storage.schema import trusted_issuers

    with RunningServer(app_name("jwks-old"), f"sqlite:///{tmp_path / 'o.db'}") as srv:
        async def plant(conn: Any) -> None:
            await conn.execute(trusted_issuers.insert().values(
                issuer="http://issuer.example", jwks=None, created_at=0.0,
                jwks_url="http://issuer.example/.well-known/jwks.json"))

        db_run(srv.db_url, plant)
        client = make_client(srv.db_url)
        resp = httpx.post(f"{srv.url}/oauth/token", auth=(client.client_id, client.secret or ""),
                          data={"grant_type": JWT_BEARER,
                                "assertion": junk("http://issuer.example", srv.issuer)},
                          timeout=30)
        assert_oauth_error(resp, 400, "invalid_grant")
        assert srv.asgi.state.server.issuer_keys.fetches == 0


