"""``/openapi.json`` matches what the server really does: it lists exactly the routes the app
serves, every documented operation answers, no status is documented that the server never sends
(FastAPI's 422), and real responses — successes and errors — validate against the declared
schemas (jsonschema, Draft 2020-12 as OpenAPI 3.1 uses)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from oauth_kit import DEVICE_CODE, Agent, auth_params, make_oauth_client, pkce
from server_kit import (
    ACCESS_TOKEN_TYPE,
    PASSWORD,
    TOKEN_EXCHANGE,
    Client,
    RunningServer,
    login,
    make_user,
)
from starlette.routing import Route, WebSocketRoute

from interapp.server.api.stream import EventStreamRoute


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The document does not depend on the back-end: SQLite only."""
    yield f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'server.db'}"


@pytest.fixture(scope="module")
def doc(server: RunningServer) -> dict[str, Any]:
    resp = httpx.get(f"{server.url}/openapi.json", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    document = resp.json()
    assert document["openapi"].startswith("3.1")
    return dict(document)


def served_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(kind, method, path) of every route the app serves, included routers walked through."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:  # FastAPI >= 0.160 keeps included routers as one entry
            sub = getattr(route, "include_context", None)
            yield from served_routes(included.routes, prefix + getattr(sub, "prefix", ""))
        elif isinstance(route, WebSocketRoute):
            yield "ws", "GET", prefix + route.path
        elif isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    yield "http", method, prefix + route.path
        else:
            raise AssertionError(f"unexpected route type {type(route).__name__}")


def test_every_served_route_is_documented_and_nothing_else(server: RunningServer,
                                                            doc: dict[str, Any]) -> None:
    served = set(served_routes(server.asgi.routes))
    http_routes = {(m, p) for kind, m, p in served if kind == "http"} - {("GET", "/openapi.json")}
    ws_routes = {p for kind, _, p in served if kind == "ws"}
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    # /v1/events is served in front of FastAPI's routing (streams skip the HTTP layers)
    assert ws_routes == set()
    assert EventStreamRoute in [m.cls for m in server.asgi.user_middleware]
    assert documented == http_routes | {("GET", "/v1/events")}
    assert len(http_routes) >= 17


def test_every_documented_operation_answers(server: RunningServer, doc: dict[str, Any]) -> None:
    with server.client() as http:
        for path, item in doc["paths"].items():
            for method in item:
                url = re.sub(r"{\w+}", "x", path)
                resp = http.request(method.upper(), url)
                assert resp.status_code != 405, (method, path)
                assert resp.status_code != 404 or resp.json() != {
                    "error": "not_found", "message": "Not Found"}, path
                assert resp.status_code < 500


def test_no_status_the_server_never_sends(doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "422" not in op["responses"], (method, path)
    assert "HTTPValidationError" not in doc["components"]["schemas"]


class Checker:
    """Validates real responses against the schema the document declares for them."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.checked: set[tuple[str, str, int]] = set()

    def __call__(self, method: str, path: str, resp: httpx.Response) -> httpx.Response:
        op = self.doc["paths"][path][method.lower()]
        status = str(resp.status_code)
        assert status in op["responses"], f"{method} {path} answered {status}, not documented"
        declared = op["responses"][status]
        content = declared.get("content", {})
        if resp.status_code == 204:
            assert resp.content == b"" and "content" not in declared
        elif resp.status_code in (302, 303):
            assert resp.headers["location"] and "content" not in declared
        elif {"text/plain", "text/html", "text/css"} & set(content):
            (kind,) = {"text/plain", "text/html", "text/css"} & set(content)
            assert resp.headers["content-type"].startswith(kind)
        else:
            schema = declared["content"]["application/json"]["schema"]
            jsonschema.validate(resp.json(), {**schema, "components": self.doc["components"]},
                                cls=jsonschema.Draft202012Validator)
        self.checked.add((method, path, resp.status_code))
        return resp


def test_real_responses_validate_against_the_declared_schemas(
        server: RunningServer, client: Client, doc: dict[str, Any], tmp_path: Path) -> None:
    check = Checker(doc)
    with server.client() as http:
        check("GET", "/.well-known/oauth-authorization-server",
              http.get("/.well-known/oauth-authorization-server"))
        check("GET", "/.well-known/jwks.json", http.get("/.well-known/jwks.json"))
        check("GET", "/healthz", http.get("/healthz"))
        check("GET", "/readyz", http.get("/readyz"))
        metrics = check("GET", "/metrics", http.get("/metrics")).text
        assert "interapp_http_request_duration_seconds" in metrics

        user = make_user(server.db_url)
        form = {"grant_type": "password", "username": user.username,
                "password": "correct horse battery staple"}
        tokens = check("POST", "/oauth/token",
                       http.post("/oauth/token", auth=client.basic(), data=form)).json()
        check("POST", "/oauth/token", http.post("/oauth/token", auth=client.basic(), data={
            "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}))
        check("POST", "/oauth/token", http.post("/oauth/token", auth=client.basic(), data={
            **form, "password": "wrong"}))
        check("POST", "/oauth/token", http.post("/oauth/token", data=form))
        check("POST", "/oauth/token", http.post("/oauth/token", auth=client.basic(), data={
            "grant_type": "x" * 70000}))
        me = login(server, http, client)
        check("POST", "/oauth/token", http.post("/oauth/token", auth=client.basic(), data={
            "grant_type": TOKEN_EXCHANGE, "subject_token": me.access,
            "subject_token_type": ACCESS_TOKEN_TYPE, "audience": "http://127.0.0.1:9"}))
        check("POST", "/oauth/introspect", http.post("/oauth/introspect", auth=client.basic(),
                                                     data={"token": me.access}))
        check("POST", "/oauth/introspect", http.post("/oauth/introspect", auth=client.basic(),
                                                     data={"token": "nope"}))
        check("POST", "/oauth/introspect", http.post("/oauth/introspect", data={"token": "x"}))
        check("POST", "/oauth/revoke", http.post("/oauth/revoke", auth=client.basic(),
                                                 data={"token": "nope"}))
        check("POST", "/oauth/revoke", http.post("/oauth/revoke", auth=client.basic(), data={}))

        other = login(server, http, client)
        check("GET", "/v1/me", me.get("/v1/me"))
        check("GET", "/v1/me", http.get("/v1/me"))
        check("POST", "/v1/contacts", me.post("/v1/contacts", json={"username": other.username}))
        check("POST", "/v1/contacts", me.post("/v1/contacts", json={"username": "ghost-x"}))
        check("POST", "/v1/contacts", me.post("/v1/contacts", json={"name": 1}))
        check("GET", "/v1/contacts/requests", other.get("/v1/contacts/requests"))
        check("POST", "/v1/contacts/{contact_id}/accept",
              me.post(f"/v1/contacts/{other.user.id}/accept"))
        check("POST", "/v1/contacts/{contact_id}/accept",
              other.post(f"/v1/contacts/{me.user.id}/accept"))
        check("POST", "/v1/contacts", me.post("/v1/contacts", json={"username": other.username}))
        check("GET", "/v1/contacts", me.get("/v1/contacts", params={"limit": 1}))
        check("GET", "/v1/contacts", me.get("/v1/contacts", params={"limit": -1}))
        check("PUT", "/v1/presence", me.put("/v1/presence", json={"state": "online",
                                                                  "status_text": "hi"}))
        check("PUT", "/v1/presence", me.put("/v1/presence", json={"state": "gone"}))
        check("POST", "/v1/messages", me.post("/v1/messages", json={
            "to": other.username, "body": "hello", "client_msg_id": "1"}))
        check("POST", "/v1/messages", me.post("/v1/messages", json={
            "to": other.username, "body": "changed", "client_msg_id": "1"}))
        check("POST", "/v1/messages", me.post("/v1/messages", json={
            "to": user.username, "body": "not a buddy"}))
        check("POST", "/v1/messages", me.post("/v1/messages", json={
            "to": other.username, "body": "x" * 70000}))
        check("GET", "/v1/conversations/{username}/messages",
              me.get(f"/v1/conversations/{other.username}/messages"))
        check("GET", "/v1/conversations/{username}/messages",
              me.get("/v1/conversations/ghost-x/messages"))
        check("PUT", "/v1/presence", me.put("/v1/presence", json={"activity": {
            "name": "Arena", "party": {"size": 2, "max": 4},
            "started_at": "2026-12-03T11:48:00Z", "join": {"url": "arena://join/1"}}}))
        check("PUT", "/v1/presence", me.put("/v1/presence", json={"activity": {"name": 5}}))
        invite = check("POST", "/v1/invites", me.post("/v1/invites", json={
            "to": other.username, "message": "gg", "client_invite_id": "i1"})).json()
        check("POST", "/v1/invites", me.post("/v1/invites", json={
            "to": other.username, "join_url": "javascript:x"}))
        check("POST", "/v1/invites", me.post("/v1/invites", json={
            "to": user.username, "join_url": "https://a.example/j"}))
        check("GET", "/v1/invites", other.get("/v1/invites"))
        check("POST", "/v1/invites/{invite_id}/accept",
              other.post(f"/v1/invites/{invite['id']}/accept"))
        check("POST", "/v1/invites/{invite_id}/decline",
              other.post(f"/v1/invites/{invite['id']}/decline"))
        check("POST", "/v1/invites/{invite_id}/decline", other.post("/v1/invites/nope/decline"))
        check("POST", "/v1/events/ticket", me.post("/v1/events/ticket"))
        upgrade = check("GET", "/v1/events", me.get("/v1/events"))  # no WebSocket upgrade
        assert upgrade.status_code == 426 and upgrade.headers["upgrade"] == "websocket"
        check("DELETE", "/v1/contacts/{contact_id}", me.delete(f"/v1/contacts/{other.user.id}"))
        check("DELETE", "/v1/contacts/{contact_id}", me.delete(f"/v1/contacts/{other.user.id}"))

        provider_pages(server, http, check)

    statuses = {s for _, _, s in check.checked}
    assert {200, 201, 204, 400, 401, 403, 404, 409, 413, 426} <= statuses
    documented_ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert {(m, p) for m, p, _ in check.checked} == documented_ops


def provider_pages(server: RunningServer, http: httpx.Client, check: Checker) -> None:
    """The authorization server's routes: pages (HTML), redirects, device grant, OIDC."""
    check("GET", "/.well-known/openid-configuration",
          http.get("/.well-known/openid-configuration"))
    check("GET", "/oauth/pages.css", http.get("/oauth/pages.css"))
    rp = make_oauth_client(server.db_url)
    user = make_user(server.db_url)
    verifier, challenge = pkce()
    params = auth_params(rp, challenge)
    check("GET", "/oauth/authorize", http.get("/oauth/authorize", params={
        **params, "client_id": "ia_nobody"}))
    check("GET", "/oauth/authorize", http.get("/oauth/authorize", params={
        **params, "response_type": "token"}))
    check("POST", "/oauth/authorize", http.post("/oauth/authorize", data={"step": "signin"}))
    agent = Agent(server.url)
    page = check("GET", "/oauth/authorize", agent.http.get("/oauth/authorize", params=params))
    check("POST", "/oauth/authorize", agent.submit(page, "signin-form", username=user.username,
                                                   password="wrong"))
    page = check("POST", "/oauth/authorize", agent.submit(
        page, "signin-form", username=user.username, password=PASSWORD))
    done = check("POST", "/oauth/authorize", agent.submit(page, "consent-form",
                                                          button="consent-allow"))
    code = httpx.URL(done.headers["location"]).params["code"]
    tokens = check("POST", "/oauth/token", http.post("/oauth/token", auth=rp.basic(), data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": params["redirect_uri"]})).json()
    check("GET", "/oauth/userinfo", http.get("/oauth/userinfo", headers={
        "Authorization": f"Bearer {tokens['access_token']}"}))
    check("GET", "/oauth/userinfo", http.get("/oauth/userinfo"))
    check("POST", "/oauth/userinfo", http.post("/oauth/userinfo", headers={
        "Authorization": f"Bearer {tokens['access_token']}"}))
    device = make_oauth_client(server.db_url, public=True, redirect_uris=(),
                               grants=(DEVICE_CODE,))
    check("POST", "/oauth/device_authorization", http.post("/oauth/device_authorization",
                                                           data={"client_id": "ia_nobody"}))
    check("POST", "/oauth/device_authorization", http.post("/oauth/device_authorization",
                                                           auth=rp.basic(), data={}))
    grant = check("POST", "/oauth/device_authorization", http.post(
        "/oauth/device_authorization", data={"client_id": device.client_id})).json()
    page = check("GET", "/device", agent.http.get("/device"))
    check("POST", "/device", agent.submit(page, "device-form", user_code="BBBB-BBBB"))
    check("POST", "/device", agent.submit(page, "device-form", user_code=grant["user_code"]))
    agent.close()
