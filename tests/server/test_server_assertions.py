"""RFC 7523 assertions that must be refused (issue 16, items 5, 6 and 9), against real servers:
two issuers (``north``, ``south``, each a real server whose own signing key signs the test's
assertions) both trusted by ``chat`` (the module's ``server``: SQLite, then PostgreSQL).

* claims: ``exp``, ``iat`` and ``jti`` are required, the times finite numbers, the lifetime at
  most an hour from ``iat``, ``exp`` at most an hour from now; every ``used_assertions`` row
  expires within reach and is swept;
* binding: an account belongs to the issuer whose login created it; another trusted issuer is
  refused, and so is every issuer on a local account unless the operator allowed it;
* malformed payloads (a lone surrogate, 5,000 nested arrays, ``NaN``) are 4xx, never 500.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from joserfc import jws
from joserfc.jwk import ECKey
from server_kit import (
    JWT_BEARER,
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
from interapp.server.oauth.rfc7523 import REACH
from interapp.server.storage.schema import used_assertions, users


@pytest.fixture(scope="module")
def north(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with RunningServer(app_name("north"),
                       f"sqlite:///{tmp_path_factory.mktemp('n') / 'n.db'}") as srv:
        yield srv


@pytest.fixture(scope="module")
def south(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with RunningServer(app_name("south"),
                       f"sqlite:///{tmp_path_factory.mktemp('s') / 's.db'}") as srv:
        yield srv


def trust(chat: RunningServer, issuer: RunningServer, *, local: bool = False) -> None:
    jwks = httpx.get(f"{issuer.url}/.well-known/jwks.json", timeout=10).text
    db_run(chat.db_url, lambda c: accounts.trust_issuer(
        c, issuer.issuer, jwks=jwks, jwks_url=None, may_sign_in_local_accounts=local))


@pytest.fixture(scope="module")
def chat(server: RunningServer, north: RunningServer, south: RunningServer) -> RunningServer:
    trust(server, north)
    trust(server, south)
    return server


@pytest.fixture(scope="module")
def chat_client(chat: RunningServer) -> Client:
    return make_client(chat.db_url)


@pytest.fixture(scope="module")
def keys(north: RunningServer, south: RunningServer) -> dict[str, ECKey]:
    return {"north": db_run(north.db_url, load_signing_key),
            "south": db_run(south.db_url, load_signing_key)}


def sign_raw(key: ECKey, payload: str | bytes) -> str:
    """A JWS over exactly ``payload`` (so it can hold what no JSON encoder would write)."""
    return jws.serialize_compact({"alg": "ES256", "kid": key.kid, "typ": "JWT"}, payload, key)


def claims_for(issuer: RunningServer, chat: RunningServer, sub: str,
               **override: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": chat.issuer, "sub": sub, "iat": now,
              "exp": now + 60, "jti": secrets.token_hex(8)}
    claims.update(override)
    return {k: v for k, v in claims.items() if v is not None}


def sign(key: ECKey, claims: dict[str, Any]) -> str:
    return sign_raw(key, json.dumps(claims))


def grant(chat: RunningServer, client: Client, assertion: str) -> httpx.Response:
    return httpx.post(f"{chat.url}/oauth/token", auth=client.basic(), timeout=15,
                      data={"grant_type": JWT_BEARER, "assertion": assertion})


def me(chat: RunningServer, resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    return dict(httpx.get(f"{chat.url}/v1/me", timeout=10,
                          headers=bearer(resp.json()["access_token"])).json())


# --- item 5: the claims -------------------------------------------------------------------


def test_the_reported_assertion_is_refused_every_time(
        chat: RunningServer, chat_client: Client, north: RunningServer,
        keys: dict[str, ECKey]) -> None:
    """exp ten years out, no iat, no jti: it was accepted three times (replayable)."""
    assertion = sign(keys["north"], claims_for(north, chat, uname("decade"), iat=None,
                                               jti=None, exp=int(time.time()) + 10 * 365 * 86400))
    for _ in range(3):
        assert_oauth_error(grant(chat, chat_client, assertion), 400, "invalid_grant")


def _bad_claims(now: int) -> dict[str, dict[str, Any] | str]:
    """Each case: claims to override, or the raw JSON text of the extra claims."""
    return {
        "no exp": {"exp": None},
        "no iat": {"iat": None},
        "no jti": {"jti": None},
        "jti empty": {"jti": ""},
        "jti not a string": {"jti": 42},
        "jti too long": {"jti": "j" * 257},
        "exp a string": {"exp": str(now + 60)},
        "exp a boolean": {"exp": True},
        "iat a list": {"iat": [now]},
        "exp huge integer": {"exp": 10 ** 30},
        "lifetime over 1 h": {"iat": now, "exp": now + 3601},
        "exp before iat": {"iat": now, "exp": now - 1},
        "iat in the future": {"iat": now + 600, "exp": now + 900},
        "exp too far from now": {"iat": now + 25, "exp": now + 3600 + 25 + 60},
        "expired": {"iat": now - 600, "exp": now - 300},
        "nbf in the future": {"nbf": now + 600},
        "iat NaN": '"iat": NaN',
        "exp NaN": '"exp": NaN',
        "exp Infinity": '"exp": Infinity',
        "exp -Infinity": '"exp": -Infinity',
        "exp 1e400 (infinite as a float)": '"exp": 1e400',
        "nbf NaN": '"nbf": NaN',
    }


def test_every_bad_time_or_jti_claim_is_refused(
        chat: RunningServer, chat_client: Client, north: RunningServer,
        keys: dict[str, ECKey]) -> None:
    now = int(time.time())
    sub = uname("claims")
    for case, bad in _bad_claims(now).items():
        if isinstance(bad, dict):
            assertion = sign(keys["north"], claims_for(north, chat, sub, **bad))
        else:  # raw text: these values cannot be written by a JSON encoder
            base = claims_for(north, chat, sub)
            name = bad.split(":")[0].strip('"')
            base.pop(name, None)
            assertion = sign_raw(keys["north"], json.dumps(base)[:-1] + ", " + bad + "}")
        resp = grant(chat, chat_client, assertion)
        assert resp.status_code == 400, (case, resp.text)
        assert resp.json()["error"] == "invalid_grant", case
    # the same key and subject with sane claims logs in: the refusals were the claims' fault
    assert me(chat, grant(chat, chat_client, sign(keys["north"], claims_for(north, chat, sub))))[
        "username"] == sub


def _rows(db_url: str) -> dict[str, float]:
    async def work(conn: Any) -> dict[str, float]:
        rows = (await conn.execute(sa.select(used_assertions.c.jti,
                                             used_assertions.c.expires_at))).all()
        return {r.jti: r.expires_at for r in rows}

    return db_run(db_url, work)


def test_used_assertion_rows_are_bounded_and_swept(
        chat: RunningServer, north: RunningServer, keys: dict[str, ECKey]) -> None:
    """A row of an accepted assertion expires within reach; rows left by older versions with an
    unbounded expiry (an exp of Infinity was accepted) are swept too."""
    legacy = {f"legacy-inf-{secrets.token_hex(3)}": float("inf"),
              f"legacy-far-{secrets.token_hex(3)}": time.time() + 10 * 365 * 86400,
              f"expired-{secrets.token_hex(3)}": time.time() - 10}

    async def plant(conn: Any) -> None:
        for jti, expires in legacy.items():
            await conn.execute(used_assertions.insert().values(
                issuer=north.issuer, jti=jti, expires_at=expires))

    db_run(chat.db_url, plant)
    assert set(legacy) <= set(_rows(chat.db_url))
    # a fresh process sweeps at its first grant (the module's server may have swept already)
    with RunningServer(app_name("sweep"), chat.db_url, issuer=chat.issuer) as fresh:
        client = make_client(fresh.db_url)
        claims = claims_for(north, chat, uname("sweep"))
        assert grant(fresh, client, sign(keys["north"], claims)).status_code == 200
    rows = _rows(chat.db_url)
    assert not set(legacy) & set(rows), "rows out of reach were not swept"
    assert rows[claims["jti"]] <= time.time() + REACH


# --- item 6: an account belongs to the issuer that created it -----------------------------


def test_an_account_is_bound_to_its_issuer_and_local_ones_need_consent(
        chat: RunningServer, chat_client: Client, north: RunningServer, south: RunningServer,
        keys: dict[str, ECKey]) -> None:
    sam, lou = uname("sam"), make_user(chat.db_url)  # lou: a local account with a password

    def login(issuer: RunningServer, sub: str) -> httpx.Response:
        name = "north" if issuer is north else "south"
        return grant(chat, chat_client, sign(keys[name], claims_for(issuer, chat, sub)))

    created = me(chat, login(north, sam))  # north's login creates sam here, bound to north
    assert me(chat, login(north, sam))["id"] == created["id"]
    refused = assert_oauth_error(login(south, sam), 400, "invalid_grant")
    assert "another issuer" in refused["error_description"]
    for issuer in (north, south):  # no issuer reaches a local account by default
        refused = assert_oauth_error(login(issuer, lou.username), 400, "invalid_grant")
        assert "local account" in refused["error_description"]
    # the operator lets south sign in to local accounts: lou is reachable from south only,
    # and sam stays north's
    trust(chat, south, local=True)
    try:
        assert me(chat, login(south, lou.username))["id"] == lou.id
        assert_oauth_error(login(north, lou.username), 400, "invalid_grant")
        assert_oauth_error(login(south, sam), 400, "invalid_grant")
        with httpx.Client(base_url=chat.url, timeout=10) as http:  # lou's password still works
            assert password_login(http, chat_client, lou.username)["token_type"] == "Bearer"
    finally:
        trust(chat, south)

    async def bound(conn: Any) -> dict[str, str | None]:
        rows = (await conn.execute(sa.select(users.c.username, users.c.external_issuer)
                                   .where(users.c.username.in_([sam, lou.username])))).all()
        return {r.username: r.external_issuer for r in rows}

    assert db_run(chat.db_url, bound) == {sam: north.issuer, lou.username: None}


def test_an_issuer_no_longer_trusted_is_refused_at_once(
        chat: RunningServer, chat_client: Client, keys: dict[str, ECKey],
        tmp_path: Path) -> None:
    """The trust entry is read in the grant's transaction: cached keys do not outlive it."""
    with RunningServer(app_name("east"), f"sqlite:///{tmp_path / 'e.db'}") as east:
        trust(chat, east)
        key = db_run(east.db_url, load_signing_key)
        sub = uname("east")
        assert grant(chat, chat_client, sign(key, claims_for(east, chat, sub))).status_code == 200

        async def untrust(conn: Any) -> None:
            from interapp.server.storage.schema import trusted_issuers

            await conn.execute(trusted_issuers.delete().where(
                trusted_issuers.c.issuer == east.issuer))

        db_run(chat.db_url, untrust)
        resp = grant(chat, chat_client, sign(key, claims_for(east, chat, sub)))
        assert "not trusted" in assert_oauth_error(resp, 400, "invalid_grant")[
            "error_description"]


# --- item 9: malformed assertions are 4xx, never 500 ------------------------------------


def b64(data: str | bytes) -> str:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


DEEP = "[" * 5000 + "]" * 5000


def unsigned(payload: str | bytes, header: str | bytes = '{"alg":"ES256","typ":"JWT"}') -> str:
    """A compact JWS of exactly these segment texts, with a junk signature."""
    return ".".join([b64(header), b64(payload), "AA"])


SURROGATE_ISS = '{"iss": "\\ud800"}'  # the JSON escape, as a client would send it


def malformed(issuer: str) -> dict[str, str]:
    """Assertions no parser should choke on: unsigned, naming a trusted issuer or not."""
    named = json.dumps({"iss": issuer})
    return {
        "lone surrogate iss": unsigned(SURROGATE_ISS),
        "lone surrogate, raw": unsigned(chr(0xD800)),
        "5,000 nested arrays": unsigned(DEEP),
        "nested arrays in a claim": unsigned(named[:-1] + ', "x": ' + DEEP + "}"),
        "nested arrays in the header": unsigned(named, header=DEEP),
        "NaN iss": unsigned('{"iss": NaN}'),
        "not UTF-8": unsigned(b'{"iss": "\xff"}'),
        "payload a list": unsigned("[1]"),
        "two parts": ".".join([b64("{}"), b64(named)]),
        "four parts": unsigned(named) + ".AA",
        "iss not a string": unsigned(json.dumps({"iss": ["a"]})),
    }


def test_malformed_assertions_are_4xx_never_500(chat: RunningServer, north: RunningServer,
                                                keys: dict[str, ECKey]) -> None:
    """Needing only a public client id, as in the report."""
    public = make_client(chat.db_url, public=True)
    cases = malformed(north.issuer)
    # signed by a trusted issuer, so the claims reach past the signature check
    surrogate = json.dumps(claims_for(north, chat, uname("sur"), name="x")).replace(
        '"name": "x"', r'"name": "\ud800"')
    cases["signed, lone surrogate in name"] = sign_raw(keys["north"], surrogate)
    cases["signed, lone surrogate in sub"] = sign_raw(keys["north"], json.dumps(
        claims_for(north, chat, "x")).replace('"sub": "x"', r'"sub": "\udfff"'))
    cases["signed, nested arrays"] = sign_raw(keys["north"], json.dumps(
        claims_for(north, chat, uname("deep")))[:-1] + f', "deep": {DEEP}}}')
    for case, assertion in cases.items():
        resp = httpx.post(f"{chat.url}/oauth/token", timeout=15, data={
            "grant_type": JWT_BEARER, "assertion": assertion, "client_id": public.client_id})
        assert resp.status_code == 400, (case, resp.status_code, resp.text)
        assert resp.json()["error"] in ("invalid_grant", "invalid_request"), case
    assert httpx.get(f"{chat.url}/healthz", timeout=10).json() == {"status": "ok"}
