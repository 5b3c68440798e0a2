"""OpenID Connect and complete RFC 8414 metadata: Authlib's validators pass on both documents,
ID tokens verify against the JWKS (ES256 by default, RS256 when registered) with the nonce
echoed, and UserInfo answers what the scopes release."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from authlib.jose import JsonWebKey, jwt
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.core import CodeIDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from oauth_kit import CALLBACK, approve, auth_params, make_oauth_client, pkce
from server_kit import Client, RunningServer, app_name, assert_oauth_error, bearer, make_user

REQUIRED_8414 = {"issuer", "authorization_endpoint", "token_endpoint", "jwks_uri",
                 "response_types_supported", "code_challenge_methods_supported",
                 "device_authorization_endpoint", "userinfo_endpoint",
                 "grant_types_supported", "scopes_supported"}


@pytest.fixture(scope="module")
def https_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Behind TLS termination the issuer is https (RFC 8414 §2 requires it)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('oidc') / 's.db'}"
    with RunningServer(app_name("oidc"), url, issuer="https://arena.example") as srv:
        yield srv


def test_rfc8414_metadata_passes_authlibs_validator(https_issuer: RunningServer) -> None:
    meta = httpx.get(f"{https_issuer.url}/.well-known/oauth-authorization-server",
                     timeout=10).json()
    AuthorizationServerMetadata(meta).validate()
    assert meta.keys() >= REQUIRED_8414
    assert meta["response_types_supported"] == ["code"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["device_authorization_endpoint"] == \
        "https://arena.example/oauth/device_authorization"


def test_openid_configuration_passes_the_discovery_validator(
        https_issuer: RunningServer) -> None:
    doc = httpx.get(f"{https_issuer.url}/.well-known/openid-configuration", timeout=10).json()
    OpenIDProviderMetadata(doc).validate()
    assert doc["issuer"] == "https://arena.example"
    assert doc["userinfo_endpoint"] == "https://arena.example/oauth/userinfo"
    assert set(doc["scopes_supported"]) >= {"openid", "profile"}
    assert doc["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]


def code_login(server: RunningServer, client: Client, scope: str, **extra: str
               ) -> dict[str, Any]:
    user = make_user(server.db_url, display_name="Olive Idc")
    verifier, challenge = pkce()
    got = approve(server.url, auth_params(client, challenge, scope=scope, **extra),
                  user.username)
    resp = httpx.post(f"{server.url}/oauth/token", auth=client.basic(), timeout=10, data={
        "grant_type": "authorization_code", "code": got["code"], "code_verifier": verifier,
        "redirect_uri": CALLBACK})
    assert resp.status_code == 200, resp.text
    return {**resp.json(), "username": user.username, "user_id": user.id}


def verify_id_token(server: RunningServer, client: Client, body: dict[str, Any],
                    nonce: str | None) -> dict[str, Any]:
    jwks = JsonWebKey.import_key_set(httpx.get(f"{server.url}/.well-known/jwks.json",
                                               timeout=10).json())
    claims = jwt.decode(body["id_token"], jwks, claims_cls=CodeIDToken, claims_options={
        "iss": {"essential": True, "value": server.issuer},
        "aud": {"essential": True, "value": client.client_id}},
        claims_params={"nonce": nonce, "access_token": body["access_token"]})
    claims.validate(leeway=30)  # exp, iat, auth_time, nonce and at_hash
    return dict(claims)


def test_id_token_es256_with_nonce_and_profile(server: RunningServer) -> None:
    client = make_oauth_client(server.db_url)
    body = code_login(server, client, "openid profile", nonce="n-abc123")
    claims = verify_id_token(server, client, body, "n-abc123")
    assert body["id_token"].count(".") == 2
    header = jwt.decode(body["id_token"], JsonWebKey.import_key_set(httpx.get(
        f"{server.url}/.well-known/jwks.json", timeout=10).json())).header
    assert header["alg"] == "ES256"
    assert claims["sub"] == body["user_id"] and claims["nonce"] == "n-abc123"
    assert claims["preferred_username"] == body["username"] and claims["name"] == "Olive Idc"
    info = httpx.get(f"{server.url}/oauth/userinfo", headers=bearer(body["access_token"]),
                     timeout=10)
    assert info.status_code == 200 and info.headers["cache-control"] == "no-store"
    assert info.json() == {"sub": body["user_id"], "preferred_username": body["username"],
                           "name": "Olive Idc"}
    post = httpx.post(f"{server.url}/oauth/userinfo", headers=bearer(body["access_token"]),
                      timeout=10)
    assert post.json() == info.json()


def test_openid_without_profile_and_a_wrong_nonce_fails(server: RunningServer) -> None:
    client = make_oauth_client(server.db_url)
    body = code_login(server, client, "openid", nonce="right")
    claims = verify_id_token(server, client, body, "right")
    assert "preferred_username" not in claims and "name" not in claims
    with pytest.raises(Exception, match="nonce"):
        verify_id_token(server, client, body, "wrong")
    info = httpx.get(f"{server.url}/oauth/userinfo", headers=bearer(body["access_token"]),
                     timeout=10)
    assert info.json() == {"sub": body["user_id"]}


def test_rs256_client(server: RunningServer) -> None:
    client = make_oauth_client(server.db_url, id_token_alg="RS256")
    body = code_login(server, client, "openid profile", nonce="rs")
    verify_id_token(server, client, body, "rs")
    header = jwt.decode(body["id_token"], JsonWebKey.import_key_set(httpx.get(
        f"{server.url}/.well-known/jwks.json", timeout=10).json())).header
    assert header["alg"] == "RS256"


def test_no_openid_no_id_token_and_userinfo_refuses(server: RunningServer,
                                                      http: httpx.Client) -> None:
    client = make_oauth_client(server.db_url)
    body = code_login(server, client, "")
    assert "id_token" not in body
    resp = http.get("/oauth/userinfo", headers=bearer(body["access_token"]))
    assert_oauth_error(resp, 403, "insufficient_scope")
    assert resp.headers["www-authenticate"].startswith('Bearer realm="interapp", '
                                                       'error="insufficient_scope"')
    for headers in ({}, bearer("ia_at_nope"), {"Authorization": "Basic eDp5"}):
        resp = http.get("/oauth/userinfo", headers=headers)
        assert_oauth_error(resp, 401, "invalid_token")
        assert 'error="invalid_token"' in resp.headers["www-authenticate"]


def test_the_api_needs_the_interapp_scope(server: RunningServer, http: httpx.Client) -> None:
    """An OpenID Connect login for another service may learn who the user is, not read the
    user's buddies and messages: /v1 needs the interapp scope (or no scope, as ever)."""
    client = make_oauth_client(server.db_url)
    for scope, status in (("openid profile", 403), ("openid", 403), ("interapp", 200),
                          ("openid interapp", 200), ("", 200)):
        body = code_login(server, client, scope)
        for _ in range(2):  # the second read may come from the hot-read page cache
            me = http.get("/v1/me", headers=bearer(body["access_token"]))
            assert me.status_code == status, (scope, me.text)
            contacts = http.get("/v1/contacts", headers=bearer(body["access_token"]))
            assert contacts.status_code == status, (scope, contacts.text)
        ticket = http.post("/v1/events/ticket", headers=bearer(body["access_token"]))
        assert ticket.status_code == (201 if status == 200 else 403), (scope, ticket.text)
        if status == 403:
            assert me.json()["error"] == "forbidden" and "interapp scope" in me.json()["message"]
    # the same account's pages are in the hot-read cache now: a token without the scope still
    # gets nothing from it
    late = code_login(server, client, "openid profile")["access_token"]
    assert http.get("/v1/me", headers=bearer(late)).status_code == 403
    assert http.get("/v1/contacts", headers=bearer(late)).status_code == 403
