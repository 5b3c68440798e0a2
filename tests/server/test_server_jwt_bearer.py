"""The same-account-system login between two real servers: RFC 8693 token exchange on the
issuer (``arena``), RFC 7523 JWT bearer grant on the audience (``arena-chat``).

``arena-chat`` is the module's ``server`` fixture (SQLite, then PostgreSQL), so the "account
created on first use" path runs on both back-ends; ``arena`` runs on its own SQLite file.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import ECKey
from server_kit import (
    ACCESS_TOKEN_TYPE,
    JWT_BEARER,
    JWT_TOKEN_TYPE,
    TOKEN_EXCHANGE,
    Client,
    RunningServer,
    app_name,
    assert_oauth_error,
    bearer,
    db_run,
    make_client,
    make_user,
    password_login,
    uname,
)

from interapp.server import accounts
from interapp.server.keys import load_signing_key
from interapp.server.storage.schema import users


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    path = tmp_path_factory.mktemp("arena") / "arena.db"
    with RunningServer(app_name("arena"), f"sqlite:///{path}") as srv:
        yield srv


@pytest.fixture(scope="module")
def arena_client(arena: RunningServer) -> Client:
    return make_client(arena.db_url)


@pytest.fixture(scope="module")
def chat(server: RunningServer, arena: RunningServer) -> RunningServer:
    """``arena-chat``: trusts arena with arena's JWKS stored in its database."""
    jwks = httpx.get(f"{arena.url}/.well-known/jwks.json", timeout=10).text
    db_run(server.db_url, lambda c: accounts.trust_issuer(c, arena.issuer, jwks=jwks,
                                                           jwks_url=None))
    return server


def exchange(arena: RunningServer, client: Client, access_token: str,
             audience: str | None, **extra: str) -> httpx.Response:
    data = {"grant_type": TOKEN_EXCHANGE, "subject_token": access_token,
            "subject_token_type": ACCESS_TOKEN_TYPE, "requested_token_type": JWT_TOKEN_TYPE,
            **extra}
    if audience is not None:
        data["audience"] = audience
    return httpx.post(f"{arena.url}/oauth/token", auth=client.basic(), data=data, timeout=10)


def bearer_grant(srv: RunningServer, client: Client, assertion: str) -> httpx.Response:
    return httpx.post(f"{srv.url}/oauth/token", auth=client.basic(), timeout=10,
                      data={"grant_type": JWT_BEARER, "assertion": assertion})


def arena_assertion(arena: RunningServer, client: Client, audience: str,
                    username: str | None = None) -> tuple[str, str]:
    """Log a fresh arena user in and exchange their token; returns (username, assertion)."""
    user = make_user(arena.db_url, username)
    tokens = password_login(httpx.Client(base_url=arena.url, timeout=10), client, user.username)
    resp = exchange(arena, client, tokens["access_token"], audience)
    assert resp.status_code == 200, resp.text
    return user.username, str(resp.json()["access_token"])


def user_exists(db_url: str, username: str) -> bool:
    async def work(conn: Any) -> bool:
        return await accounts.find_user(conn, username) is not None

    return db_run(db_url, work)


def test_token_exchange_then_jwt_bearer_creates_the_account(
        arena: RunningServer, arena_client: Client, chat: RunningServer) -> None:
    user = make_user(arena.db_url, display_name="Arena Player")
    tokens = password_login(httpx.Client(base_url=arena.url), arena_client, user.username)
    resp = exchange(arena, arena_client, tokens["access_token"], chat.issuer)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["issued_token_type"] == JWT_TOKEN_TYPE
    assert body["token_type"] == "N_A"
    assert 0 < body["expires_in"] <= 300
    assert resp.headers["cache-control"] == "no-store"
    assertion = body["access_token"]
    header = json.loads(base64.urlsafe_b64decode(assertion.split(".")[0] + "=="))
    assert header["alg"] == "ES256"
    claims = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))
    assert claims["iss"] == arena.issuer and claims["aud"] == chat.issuer
    assert claims["sub"] == user.username

    assert not user_exists(chat.db_url, user.username)
    chat_client = make_client(chat.db_url)
    resp = bearer_grant(chat, chat_client, assertion)
    assert resp.status_code == 200, resp.text
    chat_tokens = resp.json()
    assert set(chat_tokens) == {"access_token", "token_type", "expires_in", "refresh_token"}
    me = httpx.get(f"{chat.url}/v1/me", headers=bearer(chat_tokens["access_token"])).json()
    assert me["username"] == user.username
    assert me["display_name"] == "Arena Player"
    assert user_exists(chat.db_url, user.username)

    # A second login maps to the same account, never a second one.
    again = bearer_grant(chat, chat_client, arena_assertion_for(arena, arena_client,
                                                                tokens, chat.issuer))
    assert again.status_code == 200, again.text
    me2 = httpx.get(f"{chat.url}/v1/me", headers=bearer(again.json()["access_token"])).json()
    assert me2["id"] == me["id"]

    async def count(conn: Any) -> int:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(users).where(
            users.c.username == user.username))).scalar_one())

    assert db_run(chat.db_url, count) == 1

    # The chat tokens rotate like any other.
    rotated = httpx.post(f"{chat.url}/oauth/token", auth=chat_client.basic(), data={
        "grant_type": "refresh_token", "refresh_token": chat_tokens["refresh_token"]})
    assert rotated.status_code == 200, rotated.text


def arena_assertion_for(arena: RunningServer, client: Client, tokens: dict[str, Any],
                        audience: str) -> str:
    resp = exchange(arena, client, tokens["access_token"], audience)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def test_subject_maps_to_existing_local_account_only_when_allowed(
        arena: RunningServer, arena_client: Client, chat: RunningServer) -> None:
    """A local account of the same name is arena's only if the operator said so."""
    name = uname("shared")
    existing = make_user(chat.db_url, name)
    _, assertion = arena_assertion(arena, arena_client, chat.issuer, name)
    refused = bearer_grant(chat, make_client(chat.db_url), assertion)
    assert "local account" in assert_oauth_error(refused, 400, "invalid_grant")[
        "error_description"]
    jwks = httpx.get(f"{arena.url}/.well-known/jwks.json", timeout=10).text
    db_run(chat.db_url, lambda c: accounts.trust_issuer(
        c, arena.issuer, jwks=jwks, jwks_url=None, may_sign_in_local_accounts=True))
    try:
        resp = bearer_grant(chat, make_client(chat.db_url), assertion)
        assert resp.status_code == 200, resp.text
        me = httpx.get(f"{chat.url}/v1/me", headers=bearer(resp.json()["access_token"])).json()
        assert me["id"] == existing.id
    finally:
        db_run(chat.db_url, lambda c: accounts.trust_issuer(c, arena.issuer, jwks=jwks,
                                                               jwks_url=None))


def test_keys_fetched_from_the_well_known_url(arena: RunningServer, arena_client: Client,
                                              tmp_path: Path) -> None:
    """A trusted issuer stored without keys: the audience fetches the issuer's JWKS."""
    with RunningServer(app_name("arena-chat2"), f"sqlite:///{tmp_path / 'c2.db'}") as chat2:
        db_run(chat2.db_url, lambda c: accounts.trust_issuer(c, arena.issuer + "/", jwks=None,
                                                              jwks_url=None))
        username, assertion = arena_assertion(arena, arena_client, chat2.issuer)
        resp = bearer_grant(chat2, make_client(chat2.db_url), assertion)
        assert resp.status_code == 200, resp.text
        me = httpx.get(f"{chat2.url}/v1/me", headers=bearer(resp.json()["access_token"]))
        assert me.json()["username"] == username


def test_keys_fetched_from_an_explicit_jwks_url(arena: RunningServer, arena_client: Client,
                                                tmp_path: Path) -> None:
    with RunningServer(app_name("arena-chat3"), f"sqlite:///{tmp_path / 'c3.db'}") as chat3:
        db_run(chat3.db_url, lambda c: accounts.trust_issuer(
            c, arena.issuer, jwks=None, jwks_url=f"{arena.url}/.well-known/jwks.json"))
        _, assertion = arena_assertion(arena, arena_client, chat3.issuer)
        resp = bearer_grant(chat3, make_client(chat3.db_url), assertion)
        assert resp.status_code == 200, resp.text


def test_unreachable_jwks_is_invalid_grant(arena: RunningServer, arena_client: Client,
                                           tmp_path: Path, free_port: Any) -> None:
    with RunningServer(app_name("arena-chat4"), f"sqlite:///{tmp_path / 'c4.db'}") as chat4:
        db_run(chat4.db_url, lambda c: accounts.trust_issuer(
            c, arena.issuer, jwks=None,
            jwks_url=f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"))
        _, assertion = arena_assertion(arena, arena_client, chat4.issuer)
        assert_oauth_error(bearer_grant(chat4, make_client(chat4.db_url), assertion),
                           400, "invalid_grant")


def test_wrong_audience_is_invalid_grant(arena: RunningServer, arena_client: Client,
                                         chat: RunningServer) -> None:
    _, assertion = arena_assertion(arena, arena_client, "http://127.0.0.1:9/somewhere-else")
    resp = bearer_grant(chat, make_client(chat.db_url), assertion)
    assert "audience" in assert_oauth_error(resp, 400, "invalid_grant")["error_description"]


def test_untrusted_issuer_is_invalid_grant(chat: RunningServer, tmp_path: Path) -> None:
    with RunningServer(app_name("rogue"), f"sqlite:///{tmp_path / 'rogue.db'}") as rogue:
        rogue_client = make_client(rogue.db_url)
        username, assertion = arena_assertion(rogue, rogue_client, chat.issuer)
        resp = bearer_grant(chat, make_client(chat.db_url), assertion)
        assert "trusted" in assert_oauth_error(resp, 400, "invalid_grant")["error_description"]
        assert not user_exists(chat.db_url, username)


def _sign(key: ECKey, claims: dict[str, Any], alg: str = "ES256") -> str:
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key)


def test_expired_and_future_assertions(arena: RunningServer, chat: RunningServer) -> None:
    """Signed with arena's real key (read from its database), but with bad time claims."""
    key = db_run(arena.db_url, load_signing_key)
    client = make_client(chat.db_url)
    now = int(time.time())
    base = {"iss": arena.issuer, "aud": chat.issuer, "sub": uname("timed")}
    expired = _sign(key, {**base, "iat": now - 600, "exp": now - 300})
    assert_oauth_error(bearer_grant(chat, client, expired), 400, "invalid_grant")
    no_exp = _sign(key, {**base, "iat": now})
    assert_oauth_error(bearer_grant(chat, client, no_exp), 400, "invalid_grant")
    not_yet = _sign(key, {**base, "iat": now, "nbf": now + 600, "exp": now + 900})
    assert_oauth_error(bearer_grant(chat, client, not_yet), 400, "invalid_grant")
    too_long = _sign(key, {**base, "iat": now, "exp": now + 86400})
    assert_oauth_error(bearer_grant(chat, client, too_long), 400, "invalid_grant")
    bad_sub = _sign(key, {**base, "sub": "Not A Username!", "iat": now, "exp": now + 60,
                          "jti": uname("j")})
    assert_oauth_error(bearer_grant(chat, client, bad_sub), 400, "invalid_grant")
    # The same key with sane claims is accepted: the failures above are the claims' fault.
    good = _sign(key, {**base, "iat": now, "exp": now + 60, "jti": uname("j")})
    assert bearer_grant(chat, client, good).status_code == 200
    assert not user_exists(chat.db_url, "not a username!")


def test_tampered_assertions(arena: RunningServer, arena_client: Client,
                             chat: RunningServer) -> None:
    victim = make_user(chat.db_url)
    _, assertion = arena_assertion(arena, arena_client, chat.issuer)
    head, payload, sig = assertion.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = victim.username
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    client = make_client(chat.db_url)
    cases = [
        f"{head}.{forged_payload}.{sig}",  # changed subject, old signature
        f"{head}.{payload}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}",
        f"{head}.{payload}.",  # signature stripped
        "eyJhbGciOiJub25lIn0." + payload + ".",  # alg=none
        "!!!." + payload + ".xyz",  # garbage header, trusted iss
        "not-a-jwt",
        payload,
    ]
    for forged in cases:
        assert_oauth_error(bearer_grant(chat, client, forged), 400, "invalid_grant")
    # Still usable as it was signed.
    assert bearer_grant(chat, client, assertion).status_code == 200


def test_jwt_bearer_request_errors(chat: RunningServer) -> None:
    client = make_client(chat.db_url)
    resp = httpx.post(f"{chat.url}/oauth/token", auth=client.basic(),
                      data={"grant_type": JWT_BEARER})
    assert_oauth_error(resp, 400, "invalid_request")
    resp = bearer_grant(chat, client, "a" * 20000)
    assert_oauth_error(resp, 400, "invalid_request")


def test_token_exchange_errors(arena: RunningServer, arena_client: Client,
                               chat: RunningServer) -> None:
    user = make_user(arena.db_url)
    tokens = password_login(httpx.Client(base_url=arena.url), arena_client, user.username)
    access = tokens["access_token"]
    assert_oauth_error(exchange(arena, arena_client, access, None), 400, "invalid_target")
    assert_oauth_error(exchange(arena, arena_client, access, arena.issuer),
                       400, "invalid_target")
    assert_oauth_error(exchange(arena, arena_client, access, "ftp://x"), 400, "invalid_target")
    assert_oauth_error(exchange(arena, arena_client, "ia_at_forged", chat.issuer),
                       400, "invalid_grant")
    assert_oauth_error(exchange(arena, arena_client, tokens["refresh_token"], chat.issuer),
                       400, "invalid_grant")
    other = make_client(arena.db_url)
    assert_oauth_error(exchange(arena, other, access, chat.issuer), 400, "invalid_grant")
    assert_oauth_error(exchange(arena, arena_client, access, chat.issuer,
                                subject_token_type=JWT_TOKEN_TYPE), 400, "invalid_request")
    assert_oauth_error(exchange(arena, arena_client, access, chat.issuer,
                                requested_token_type=ACCESS_TOKEN_TYPE), 400, "invalid_request")
    assert_oauth_error(exchange(arena, arena_client, access, chat.issuer, actor_token="x"),
                       400, "invalid_request")
    # A revoked login cannot mint assertions any more.
    httpx.post(f"{arena.url}/oauth/revoke", auth=arena_client.basic(),
               data={"token": tokens["refresh_token"]})
    assert_oauth_error(exchange(arena, arena_client, access, chat.issuer), 400, "invalid_grant")


def test_concurrent_first_logins_make_one_account(arena: RunningServer,
                                                  chat: RunningServer) -> None:
    """Several plug-ins of one user log in by SSO at the same moment: one account, all succeed."""
    key = db_run(arena.db_url, load_signing_key)
    client = make_client(chat.db_url)
    sub = uname("racer")
    now = int(time.time())
    assertions = [_sign(key, {"iss": arena.issuer, "aud": chat.issuer, "sub": sub, "iat": now,
                              "exp": now + 60, "jti": str(i)}) for i in range(6)]
    results: list[httpx.Response] = []
    barrier = threading.Barrier(len(assertions))

    def go(assertion: str) -> None:
        barrier.wait()
        results.append(bearer_grant(chat, client, assertion))

    threads = [threading.Thread(target=go, args=(a,)) for a in assertions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r.status_code for r in results] == [200] * len(assertions), [
        (r.status_code, r.text[:120]) for r in results]
    ids = {httpx.get(f"{chat.url}/v1/me", headers=bearer(r.json()["access_token"])).json()["id"]
           for r in results}
    assert len(ids) == 1


def test_a_replayed_assertion_is_refused(arena: RunningServer, chat: RunningServer) -> None:
    """RFC 7523 §3 (7): an assertion with a ``jti`` logs in once, even when replayed at once."""
    key = db_run(arena.db_url, load_signing_key)
    client = make_client(chat.db_url)
    now = int(time.time())
    assertion = _sign(key, {"iss": arena.issuer, "aud": chat.issuer, "sub": uname("replay"),
                            "iat": now, "exp": now + 60, "jti": uname("jti")})
    results: list[httpx.Response] = []
    barrier = threading.Barrier(4)

    def go() -> None:
        barrier.wait()
        results.append(bearer_grant(chat, client, assertion))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.status_code for r in results) == [200, 400, 400, 400], [
        (r.status_code, r.text[:120]) for r in results]
    for refused in (r for r in results if r.status_code == 400):
        assert refused.json()["error"] == "invalid_grant"
        assert "already used" in refused.json()["error_description"]
    assert_oauth_error(bearer_grant(chat, client, assertion), 400, "invalid_grant")
