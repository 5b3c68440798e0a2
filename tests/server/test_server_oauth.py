"""OAuth 2.0 end to end over a real socket: metadata, JWKS, the token endpoint (password and
rotating refresh grants, client authentication, errors), revocation and introspection.

Runs once on SQLite and once on PostgreSQL (the ``db_url`` fixture is parametrized).
"""

from __future__ import annotations

import base64

import httpx
from server_kit import (
    PASSWORD,
    Client,
    RunningServer,
    assert_oauth_error,
    bearer,
    make_client,
    make_user,
    password_login,
)

TOKEN_KEYS = {"access_token", "token_type", "expires_in", "refresh_token"}


def test_rfc8414_metadata(server: RunningServer, http: httpx.Client) -> None:
    resp = http.get("/.well-known/oauth-authorization-server")
    assert resp.status_code == 200
    meta = resp.json()
    assert meta["issuer"] == server.url
    assert meta["token_endpoint"] == f"{server.url}/oauth/token"
    assert meta["revocation_endpoint"] == f"{server.url}/oauth/revoke"
    assert meta["introspection_endpoint"] == f"{server.url}/oauth/introspect"
    assert meta["jwks_uri"] == f"{server.url}/.well-known/jwks.json"
    assert set(meta["grant_types_supported"]) == {
        "authorization_code", "urn:ietf:params:oauth:grant-type:device_code",
        "password", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "urn:ietf:params:oauth:grant-type:token-exchange"}
    assert {"client_secret_basic", "client_secret_post"} <= set(
        meta["token_endpoint_auth_methods_supported"])


def test_jwks_is_public_es256(http: httpx.Client) -> None:
    """The app's ES256 key first; then the RS256 key OpenID Connect requires for ID tokens."""
    meta = http.get("/.well-known/oauth-authorization-server").json()
    resp = httpx.get(meta["jwks_uri"], timeout=10)
    assert resp.status_code == 200
    keys = resp.json()["keys"]
    assert [k["alg"] for k in keys] == ["ES256", "RS256"]
    key, rsa = keys
    assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256"
    assert key["use"] == "sig" and key["kid"]
    assert rsa["kty"] == "RSA" and rsa["use"] == "sig" and rsa["kid"] != key["kid"]
    assert not {"d", "p", "q", "dp", "dq", "qi"} & (set(key) | set(rsa))  # never private
    # Stable across requests (it is stored, not regenerated).
    assert http.get("/.well-known/jwks.json").json() == resp.json()


def test_password_grant_with_http_basic(server: RunningServer, http: httpx.Client,
                                        client: Client) -> None:
    user = make_user(server.db_url, display_name="Ann Example")
    resp = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "password", "username": user.username, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == TOKEN_KEYS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == server.settings.access_token_ttl
    assert body["access_token"] != body["refresh_token"]
    assert resp.headers["cache-control"] == "no-store"
    me = http.get("/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json() == {"id": user.id, "username": user.username,
                         "display_name": "Ann Example", "presence": "offline",
                         "status_text": "", "activity": None}


def test_password_grant_with_client_secret_post(server: RunningServer, http: httpx.Client,
                                                client: Client) -> None:
    user = make_user(server.db_url)
    resp = http.post("/oauth/token", data={
        "grant_type": "password", "username": user.username, "password": PASSWORD,
        **client.post_fields()})
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == TOKEN_KEYS


def test_public_client_needs_no_secret(server: RunningServer, http: httpx.Client) -> None:
    public = make_client(server.db_url, public=True)
    user = make_user(server.db_url)
    resp = http.post("/oauth/token", data={
        "grant_type": "password", "username": user.username, "password": PASSWORD,
        "client_id": public.client_id})
    assert resp.status_code == 200, resp.text
    # ... but must not present one.
    bad = http.post("/oauth/token", data={
        "grant_type": "password", "username": user.username, "password": PASSWORD,
        "client_id": public.client_id, "client_secret": "guess"})
    assert_oauth_error(bad, 401, "invalid_client")


def test_password_grant_failures_look_alike(server: RunningServer, http: httpx.Client,
                                            client: Client) -> None:
    user = make_user(server.db_url)
    wrong = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "password", "username": user.username, "password": "nope"})
    unknown = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "password", "username": "no-such-user-anywhere", "password": "nope"})
    a = assert_oauth_error(wrong, 400, "invalid_grant")
    b = assert_oauth_error(unknown, 400, "invalid_grant")
    assert a == b  # the response does not tell whether the account exists
    missing = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "password", "username": user.username})
    assert "password" in assert_oauth_error(missing, 400, "invalid_request")["error_description"]


def test_sso_only_account_cannot_use_password_grant(server: RunningServer, http: httpx.Client,
                                                    client: Client) -> None:
    user = make_user(server.db_url, password=None)
    resp = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "password", "username": user.username, "password": ""})
    assert_oauth_error(resp, 400, "invalid_request")
    resp = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "password", "username": user.username, "password": "anything"})
    assert_oauth_error(resp, 400, "invalid_grant")


def test_unsupported_and_missing_grant_type(http: httpx.Client, client: Client) -> None:
    resp = http.post("/oauth/token", auth=client.basic(),
                     data={"grant_type": "client_credentials", "scope": "x"})
    assert_oauth_error(resp, 400, "unsupported_grant_type")
    # a grant the server has but this client was not given (it has no redirect URI)
    resp = http.post("/oauth/token", auth=client.basic(),
                     data={"grant_type": "authorization_code", "code": "x"})
    assert_oauth_error(resp, 400, "unauthorized_client")
    resp = http.post("/oauth/token", auth=client.basic(), data={"username": "x"})
    assert "grant_type" in assert_oauth_error(resp, 400, "invalid_request")["error_description"]


def test_bad_client_authentication(server: RunningServer, http: httpx.Client,
                                   client: Client) -> None:
    user = make_user(server.db_url)
    form = {"grant_type": "password", "username": user.username, "password": PASSWORD}
    cases = [
        {"auth": httpx.BasicAuth(client.client_id, "wrong-secret")},
        {"auth": httpx.BasicAuth("ia_unknown", "whatever")},
        {},  # no client authentication at all
        {"headers": {"Authorization": "Basic !!!not-base64!!!"}},
        {"headers": {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}},
        {"headers": {"Authorization": "Basic \u00e9\u00e9\u00e9".encode("latin-1")}},  # not ASCII
        {"headers": {"Authorization": f"Bearer {client.secret}"}},
    ]
    for case in cases:
        resp = http.post("/oauth/token", data=form, **case)  # type: ignore[arg-type]
        assert_oauth_error(resp, 401, "invalid_client")
        assert resp.headers["www-authenticate"].lower().startswith("basic")
    secret_post = http.post("/oauth/token", data={
        **form, "client_id": client.client_id, "client_secret": "wrong"})
    assert_oauth_error(secret_post, 401, "invalid_client")


def test_two_client_authentication_methods_are_refused(server: RunningServer,
                                                       http: httpx.Client,
                                                       client: Client) -> None:
    user = make_user(server.db_url)
    resp = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "password", "username": user.username, "password": PASSWORD,
        "client_secret": client.secret})
    assert_oauth_error(resp, 400, "invalid_request")


def test_repeated_parameter_is_invalid_request(server: RunningServer, http: httpx.Client,
                                               client: Client) -> None:
    user = make_user(server.db_url)
    body = (f"grant_type=password&username={user.username}&password=a&password=b")
    resp = http.post("/oauth/token", auth=client.basic(), content=body, headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    err = assert_oauth_error(resp, 400, "invalid_request")
    assert "password" in err["error_description"]


def test_token_endpoint_wants_a_form(http: httpx.Client, client: Client) -> None:
    resp = http.post("/oauth/token", auth=client.basic(),
                     json={"grant_type": "password", "username": "a", "password": "b"})
    assert_oauth_error(resp, 400, "invalid_request")


def test_refresh_rotation_and_reuse_detection(server: RunningServer, http: httpx.Client,
                                              client: Client) -> None:
    user = make_user(server.db_url)
    first = password_login(http, client, user.username)

    def refresh(token: str) -> httpx.Response:
        return http.post("/oauth/token", auth=client.basic(),
                         data={"grant_type": "refresh_token", "refresh_token": token})

    resp = refresh(first["refresh_token"])
    assert resp.status_code == 200, resp.text
    second = resp.json()
    assert set(second) == TOKEN_KEYS
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    third = refresh(second["refresh_token"]).json()
    assert third["refresh_token"] not in {first["refresh_token"], second["refresh_token"]}
    assert http.get("/v1/me", headers=bearer(third["access_token"])).status_code == 200

    # Re-use of a rotated refresh token: refused, and the whole family dies with it.
    reuse = refresh(first["refresh_token"])
    assert_oauth_error(reuse, 400, "invalid_grant")
    assert_oauth_error(refresh(third["refresh_token"]), 400, "invalid_grant")
    for tokens in (first, second, third):
        resp = http.get("/v1/me", headers=bearer(tokens["access_token"]))
        assert resp.status_code == 401, resp.text
    intro = http.post("/oauth/introspect", auth=client.basic(),
                      data={"token": third["access_token"]})
    assert intro.json() == {"active": False}

    # A new login starts a new, unaffected family.
    fresh = password_login(http, client, user.username)
    assert http.get("/v1/me", headers=bearer(fresh["access_token"])).status_code == 200


def test_refresh_token_bound_to_its_client(server: RunningServer, http: httpx.Client,
                                           client: Client) -> None:
    other = make_client(server.db_url)
    tokens = password_login(http, client, make_user(server.db_url).username)
    resp = http.post("/oauth/token", auth=other.basic(), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert_oauth_error(resp, 400, "invalid_grant")
    # Not treated as re-use: the rightful client can still rotate it.
    ok = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert ok.status_code == 200, ok.text


def test_token_kinds_are_not_interchangeable(server: RunningServer, http: httpx.Client,
                                             client: Client) -> None:
    tokens = password_login(http, client, make_user(server.db_url).username)
    assert http.get("/v1/me", headers=bearer(tokens["refresh_token"])).status_code == 401
    resp = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "refresh_token", "refresh_token": tokens["access_token"]})
    assert_oauth_error(resp, 400, "invalid_grant")
    resp = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "refresh_token", "refresh_token": "ia_rt_made-up"})
    assert_oauth_error(resp, 400, "invalid_grant")


def test_revoke_refresh_token_revokes_family(server: RunningServer, http: httpx.Client,
                                             client: Client) -> None:
    tokens = password_login(http, client, make_user(server.db_url).username)
    resp = http.post("/oauth/revoke", auth=client.basic(), data={
        "token": tokens["refresh_token"], "token_type_hint": "refresh_token"})
    assert resp.status_code == 200
    assert resp.json() == {}
    assert http.get("/v1/me", headers=bearer(tokens["access_token"])).status_code == 401
    resp = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert_oauth_error(resp, 400, "invalid_grant")


def test_revoke_access_token_only(server: RunningServer, http: httpx.Client,
                                  client: Client) -> None:
    tokens = password_login(http, client, make_user(server.db_url).username)
    resp = http.post("/oauth/revoke", data={"token": tokens["access_token"],
                                            **client.post_fields()})
    assert resp.status_code == 200
    assert http.get("/v1/me", headers=bearer(tokens["access_token"])).status_code == 401
    resp = http.post("/oauth/token", auth=client.basic(), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert resp.status_code == 200, resp.text


def test_revoke_unknown_or_foreign_token_is_still_200(server: RunningServer,
                                                      http: httpx.Client,
                                                      client: Client) -> None:
    resp = http.post("/oauth/revoke", auth=client.basic(), data={"token": "ia_at_nothing"})
    assert resp.status_code == 200 and resp.json() == {}
    other = make_client(server.db_url)
    tokens = password_login(http, client, make_user(server.db_url).username)
    resp = http.post("/oauth/revoke", auth=other.basic(), data={"token": tokens["access_token"]})
    assert resp.status_code == 200
    # Another client cannot revoke this client's token.
    assert http.get("/v1/me", headers=bearer(tokens["access_token"])).status_code == 200


def test_revoke_errors(http: httpx.Client, client: Client) -> None:
    assert_oauth_error(http.post("/oauth/revoke", data={"token": "x"}), 401, "invalid_client")
    assert_oauth_error(http.post("/oauth/revoke", auth=client.basic(), data={}),
                       400, "invalid_request")
    assert_oauth_error(http.post("/oauth/revoke", auth=client.basic(), data={
        "token": "x", "token_type_hint": "id_token"}), 400, "unsupported_token_type")


def test_introspection(server: RunningServer, http: httpx.Client, client: Client) -> None:
    user = make_user(server.db_url)
    tokens = password_login(http, client, user.username)
    resp = http.post("/oauth/introspect", auth=client.basic(),
                     data={"token": tokens["access_token"]})
    assert resp.status_code == 200
    info = resp.json()
    assert info["active"] is True
    assert info["client_id"] == client.client_id
    assert info["username"] == user.username
    assert info["sub"] == user.id
    assert info["iss"] == server.url
    assert info["token_type"] == "Bearer"
    assert info["exp"] - info["iat"] == server.settings.access_token_ttl
    refresh = http.post("/oauth/introspect", auth=client.basic(),
                        data={"token": tokens["refresh_token"]}).json()
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"
    unknown = http.post("/oauth/introspect", auth=client.basic(), data={"token": "nope"})
    assert unknown.status_code == 200 and unknown.json() == {"active": False}
    assert_oauth_error(http.post("/oauth/introspect", data={"token": "nope"}),
                       401, "invalid_client")
    assert_oauth_error(http.post("/oauth/introspect", auth=client.basic(), data={}),
                       400, "invalid_request")


def test_a_public_client_introspects_only_its_own_tokens(server: RunningServer,
                                                         http: httpx.Client,
                                                         client: Client) -> None:
    """RFC 7662 §2.1/§4: anyone can claim a public client's id, so it learns nothing about
    other clients' tokens (it used to get their usernames); a confidential client (a resource
    server) still can introspect any token."""
    user = make_user(server.db_url)
    others = password_login(http, client, user.username)  # a confidential client's token
    public = make_client(server.db_url, public=True)
    own = http.post("/oauth/token", data={"grant_type": "password", "client_id": public.client_id,
                                          "username": user.username, "password": PASSWORD})
    assert own.status_code == 200, own.text
    for token in (others["access_token"], others["refresh_token"]):
        resp = http.post("/oauth/introspect", data={"token": token,
                                                    "client_id": public.client_id})
        assert resp.status_code == 200 and resp.json() == {"active": False}, resp.text
    mine = http.post("/oauth/introspect", data={"token": own.json()["access_token"],
                                                "client_id": public.client_id}).json()
    assert mine["active"] is True and mine["username"] == user.username
    theirs = http.post("/oauth/introspect", auth=client.basic(),
                       data={"token": own.json()["access_token"]}).json()
    assert theirs["active"] is True and theirs["client_id"] == public.client_id
