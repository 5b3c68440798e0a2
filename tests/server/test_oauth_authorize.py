"""The authorization endpoint and the authorization_code grant over a real socket: a third-party
client (Authlib's httpx OAuth2Client) completes code + PKCE, and each failure path gets the RFC's
error — wrong PKCE verifier, replayed code (which revokes what it issued), redirect URI that does
not match, denied consent, expired code, unauthorized client, missing PKCE.

Runs once on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import time

import httpx
import pytest
import sqlalchemy as sa
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError as AuthlibError
from authlib.integrations.httpx_client import OAuth2Client
from oauth_kit import (
    CALLBACK,
    Agent,
    approve,
    auth_params,
    forms,
    make_oauth_client,
    pkce,
    query_of,
)
from server_kit import (
    Client,
    RunningServer,
    app_name,
    assert_oauth_error,
    bearer,
    db_run,
    make_user,
)

from interapp.server.storage.schema import authorization_codes


def token_request(http: httpx.Client, client: Client, code: str, verifier: str,
                  redirect_uri: str = CALLBACK) -> httpx.Response:
    return http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": redirect_uri})


def test_authlib_client_completes_code_with_pkce(server: RunningServer) -> None:
    """Authlib builds the request (S256), the user signs in and allows, Authlib redeems the
    code: the tokens work on /v1, and the redirect carried state and iss (RFC 9207)."""
    client = make_oauth_client(server.db_url)
    user = make_user(server.db_url, display_name="Ann Authlib")
    rp = OAuth2Client(client.client_id, client.secret, scope="openid profile interapp",
                      redirect_uri=CALLBACK, code_challenge_method="S256")
    verifier = generate_token(64)
    url, state = rp.create_authorization_url(f"{server.url}/oauth/authorize",
                                             code_verifier=verifier, nonce="n-0S6_WzA2Mj")
    agent = Agent(server.url)
    page = agent.http.get(url)
    assert page.status_code == 200 and "signin-form" in forms(page.text)
    page = agent.submit(page, "signin-form", username=user.username,
                        password="correct horse battery staple")
    assert page.status_code == 200 and user.username in page.text  # the consent page
    done = agent.submit(page, "consent-form", button="consent-allow")
    assert done.status_code == 303
    location = done.headers["location"]
    got = query_of(location)
    assert got["state"] == state and got["iss"] == server.issuer and got["code"]
    token = rp.fetch_token(f"{server.url}/oauth/token", authorization_response=location,
                           code_verifier=verifier)
    assert token["token_type"] == "Bearer" and token["refresh_token"]
    assert token["scope"] == "openid profile interapp" and token["id_token"]
    me = httpx.get(f"{server.url}/v1/me", headers=bearer(token["access_token"]), timeout=10)
    assert me.status_code == 200 and me.json()["username"] == user.username
    # the refresh token rotates like any other
    again = rp.refresh_token(f"{server.url}/oauth/token", refresh_token=token["refresh_token"])
    assert again["refresh_token"] != token["refresh_token"]
    # signed in once: the next authorization goes straight to consent
    page = agent.http.get("/oauth/authorize", params=auth_params(client, pkce()[1]))
    assert "consent-form" in forms(page.text) and "signin-form" not in forms(page.text)
    agent.close()


def test_wrong_pkce_verifier_is_invalid_grant(server: RunningServer, http: httpx.Client) -> None:
    client = make_oauth_client(server.db_url)
    user = make_user(server.db_url)
    verifier, challenge = pkce()
    got = approve(server.url, auth_params(client, challenge), user.username)
    wrong = pkce()[0]
    assert_oauth_error(token_request(http, client, got["code"], wrong), 400, "invalid_grant")
    resp = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "authorization_code", "code": got["code"], "redirect_uri": CALLBACK})
    assert_oauth_error(resp, 400, "invalid_request")  # no verifier at all
    # the code was not spent by the failures: the real verifier still works
    assert token_request(http, client, got["code"], verifier).status_code == 200


def test_replayed_code_is_refused_and_revokes_what_it_issued(server: RunningServer,
                                                           http: httpx.Client) -> None:
    client = make_oauth_client(server.db_url)
    user = make_user(server.db_url)
    verifier, challenge = pkce()
    code = approve(server.url, auth_params(client, challenge), user.username)["code"]
    first = token_request(http, client, code, verifier)
    assert first.status_code == 200
    tokens = first.json()
    assert http.get("/v1/me", headers=bearer(tokens["access_token"])).status_code == 200
    body = assert_oauth_error(token_request(http, client, code, verifier), 400, "invalid_grant")
    assert "already used" in body["error_description"]
    assert http.get("/v1/me", headers=bearer(tokens["access_token"])).status_code == 401
    refresh = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert_oauth_error(refresh, 400, "invalid_grant")


def test_code_of_another_client_and_redirect_uri_at_the_token_endpoint(
        server: RunningServer, http: httpx.Client) -> None:
    client = make_oauth_client(server.db_url)
    other = make_oauth_client(server.db_url)
    user = make_user(server.db_url)
    verifier, challenge = pkce()
    code = approve(server.url, auth_params(client, challenge), user.username)["code"]
    assert_oauth_error(token_request(http, other, code, verifier), 400, "invalid_grant")
    assert_oauth_error(token_request(http, client, code, verifier,
                                     redirect_uri="https://rp.example/other"),
                       400, "invalid_grant")
    assert token_request(http, client, code, verifier).status_code == 200


def test_redirect_uri_that_does_not_match_is_never_redirected_to(
        server: RunningServer, http: httpx.Client) -> None:
    """RFC 6749 §4.1.2.1: an unregistered redirect URI (or client) gets an error page."""
    client = make_oauth_client(server.db_url)
    challenge = pkce()[1]
    for bad in ("https://evil.example/callback", CALLBACK + "/x", CALLBACK + "?a=1",
                "https://RP.example/callback", "http://rp.example/callback"):
        resp = http.get("/oauth/authorize",
                        params=auth_params(client, challenge, redirect_uri=bad))
        assert resp.status_code == 400, bad
        assert "location" not in resp.headers
        assert "not registered" in resp.text
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    for params in ({**auth_params(client, challenge), "client_id": "ia_nobody"},
                   {k: v for k, v in auth_params(client, challenge).items()
                    if k != "client_id"}):
        resp = http.get("/oauth/authorize", params=params)
        assert resp.status_code == 400 and "location" not in resp.headers


def test_loopback_redirect_any_port_for_native_clients(server: RunningServer) -> None:
    """RFC 8252 §7.3: a registered http://127.0.0.1/cb matches any port, nothing else."""
    client = make_oauth_client(server.db_url, public=True,
                               redirect_uris=("http://127.0.0.1/cb", "http://[::1]/cb"))
    user = make_user(server.db_url)
    verifier, challenge = pkce()
    for uri in ("http://127.0.0.1:54321/cb", "http://[::1]:8/cb", "http://127.0.0.1/cb"):
        got = approve(server.url, auth_params(client, challenge, redirect_uri=uri),
                      user.username)
        assert got["code"]
        resp = httpx.post(f"{server.url}/oauth/token", timeout=10, data={
            "grant_type": "authorization_code", "code": got["code"], "code_verifier": verifier,
            "redirect_uri": uri, "client_id": client.client_id})
        assert resp.status_code == 200, resp.text
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for bad in ("http://127.0.0.1:54321/other", "http://localhost:54321/cb",
                    "https://127.0.0.1:54321/cb", "http://127.0.0.2:54321/cb",
                    "http://u@127.0.0.1:54321/cb"):
            resp = http.get("/oauth/authorize",
                            params=auth_params(client, challenge, redirect_uri=bad))
            assert resp.status_code == 400 and "location" not in resp.headers, bad


@pytest.mark.parametrize(("change", "error"), [
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),  # plain is the default: refused
    ({"code_challenge": "short"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": None}, "unsupported_response_type"),
    ({"scope": "openid admin"}, "invalid_scope"),
])
def test_bad_requests_go_back_with_the_rfc_error_state_and_iss(
        server: RunningServer, http: httpx.Client, change: dict[str, str | None],
        error: str) -> None:
    client = make_oauth_client(server.db_url)
    params = auth_params(client, pkce()[1])
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    resp = http.get("/oauth/authorize", params=params)
    assert resp.status_code == 302
    location = resp.headers["location"]
    assert location.startswith(CALLBACK + "?")
    got = query_of(location)
    assert got["error"] == error and got["error_description"]
    assert got["state"] == params["state"] and got["iss"] == server.issuer


def test_repeated_parameter_is_refused(server: RunningServer, http: httpx.Client) -> None:
    client = make_oauth_client(server.db_url)
    query = httpx.QueryParams(auth_params(client, pkce()[1])).add("scope", "openid")
    resp = http.get("/oauth/authorize", params=query)
    assert resp.status_code == 400 and "location" not in resp.headers
    assert "repeated" in resp.text


def test_denied_consent_is_access_denied_and_stores_no_code(server: RunningServer) -> None:
    client = make_oauth_client(server.db_url)
    user = make_user(server.db_url)
    params = auth_params(client, pkce()[1])
    got = approve(server.url, params, user.username, decision="consent-deny")
    assert got["error"] == "access_denied" and got["state"] == params["state"]
    assert got["iss"] == server.issuer and "code" not in got

    async def codes(conn: sa.ext.asyncio.AsyncConnection) -> int:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(
            authorization_codes).where(authorization_codes.c.client_id == client.client_id))
        ).scalar_one())

    assert db_run(server.db_url, codes) == 0


def test_client_without_the_grant_is_unauthorized_client(server: RunningServer,
                                                         http: httpx.Client) -> None:
    client = make_oauth_client(server.db_url, grants=("password",))
    resp = http.get("/oauth/authorize", params=auth_params(client, pkce()[1]))
    assert resp.status_code == 302
    assert query_of(resp.headers["location"])["error"] == "unauthorized_client"


def test_a_code_lives_at_most_its_ttl(db_url: str) -> None:
    """Codes live ≤ 60 s (settings refuse more); with a 1 s lifetime a late code is refused."""
    with RunningServer(app_name("codettl"), db_url, authorization_code_ttl=1) as srv:
        client = make_oauth_client(db_url)
        user = make_user(db_url)
        verifier, challenge = pkce()
        code = approve(srv.url, auth_params(client, challenge), user.username)["code"]
        time.sleep(2.5)
        with srv.client() as http:
            body = assert_oauth_error(token_request(http, client, code, verifier), 400,
                                      "invalid_grant")
        assert "expired" in body["error_description"]
    from interapp.errors import ConfigError
    from interapp.server.settings import ServerSettings

    with pytest.raises(ConfigError):
        ServerSettings(app="x", db_url=db_url, issuer="http://x", authorization_code_ttl=61)


def test_authlib_sees_the_error_of_a_replayed_code(server: RunningServer) -> None:
    client = make_oauth_client(server.db_url)
    user = make_user(server.db_url)
    rp = OAuth2Client(client.client_id, client.secret, redirect_uri=CALLBACK,
                      code_challenge_method="S256")
    verifier = generate_token(64)
    url, _ = rp.create_authorization_url(f"{server.url}/oauth/authorize",
                                         code_verifier=verifier, scope="openid")
    params = dict(httpx.URL(url).params)
    got = approve(server.url, params, user.username)
    response = f"{CALLBACK}?code={got['code']}&state={got['state']}"
    rp.fetch_token(f"{server.url}/oauth/token", authorization_response=response,
                   code_verifier=verifier)
    with pytest.raises(AuthlibError) as replay:
        rp.fetch_token(f"{server.url}/oauth/token", authorization_response=response,
                       code_verifier=verifier)
    assert replay.value.error == "invalid_grant"


def test_prompt_none_and_prompt_login(server: RunningServer) -> None:
    """OIDC Core §3.1.2.1: prompt=none never shows a page; prompt=login asks again."""
    client = make_oauth_client(server.db_url)
    user = make_user(server.db_url)
    agent = Agent(server.url)
    params = auth_params(client, pkce()[1], prompt="none")
    resp = agent.http.get("/oauth/authorize", params=params)
    assert resp.status_code == 302
    assert query_of(resp.headers["location"])["error"] == "login_required"
    assert agent.authorize(auth_params(client, pkce()[1]), user.username).status_code == 303
    resp = agent.http.get("/oauth/authorize", params=params)
    got = query_of(resp.headers["location"])
    assert got["error"] == "consent_required" and got["state"] == params["state"]
    page = agent.http.get("/oauth/authorize", params=auth_params(client, pkce()[1],
                                                                  prompt="login"))
    assert "signin-form" in forms(page.text)
    agent.close()


def test_a_native_apps_private_use_scheme(server: RunningServer) -> None:
    """RFC 8252 §7.1: a private-use scheme (com.example.app:/cb) is redirected to."""
    uri = "com.example.app:/oauth2redirect"
    client = make_oauth_client(server.db_url, public=True, redirect_uris=(uri,))
    user = make_user(server.db_url)
    agent = Agent(server.url)
    page = agent.http.get("/oauth/authorize", params=auth_params(client, pkce()[1],
                                                                  redirect_uri=uri))
    page = agent.submit(page, "signin-form", username=user.username,
                        password="correct horse battery staple")
    done = agent.submit(page, "consent-form", button="consent-allow")
    assert done.headers["location"].startswith(uri + "?code=")
    agent.close()
