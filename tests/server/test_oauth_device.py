"""RFC 8628 over a real socket: a third-party client (Authlib's OAuth2Client, public) asks for a
device code and polls; the user types the code on /device, signs in and allows (or denies).
Polling answers authorization_pending, slow_down, access_denied, expired_token, then tokens once.

Runs once on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from authlib.integrations.base_client.errors import OAuthError as AuthlibError
from authlib.integrations.httpx_client import OAuth2Client
from oauth_kit import DEVICE_CODE, Agent, forms, make_oauth_client
from server_kit import (
    PASSWORD,
    Client,
    RunningServer,
    app_name,
    assert_oauth_error,
    bearer,
    make_user,
)


@pytest.fixture(scope="module")
def quick(db_url: str) -> Any:
    """A server whose devices may poll every second and whose device codes live 3 s."""
    with RunningServer(app_name("device"), db_url, device_poll_interval=1,
                       device_code_ttl=3) as srv:
        yield srv


def device_client(server: RunningServer) -> Client:
    return make_oauth_client(server.db_url, public=True, redirect_uris=(),
                             grants=(DEVICE_CODE, "refresh_token"))


def start(server: RunningServer, client: Client, scope: str = "openid profile"
          ) -> dict[str, Any]:
    resp = httpx.post(f"{server.url}/oauth/device_authorization", timeout=10,
                      data={"client_id": client.client_id, "scope": scope})
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    body: dict[str, Any] = resp.json()
    return body


def poll(server: RunningServer, client: Client, device_code: str) -> httpx.Response:
    return httpx.post(f"{server.url}/oauth/token", timeout=10, data={
        "grant_type": DEVICE_CODE, "device_code": device_code, "client_id": client.client_id})


def type_code(server: RunningServer, user_code: str, username: str | None,
              decision: str = "consent-allow", agent: Agent | None = None) -> httpx.Response:
    """The user on /device: the code, the sign-in (if asked), the decision."""
    agent = agent or Agent(server.url)
    page = agent.http.get("/device")
    page = agent.submit(page, "device-form", user_code=user_code)
    if "signin-form" in forms(page.text):
        assert username is not None
        page = agent.submit(page, "signin-form", username=username, password=PASSWORD)
    assert "consent-form" in forms(page.text), page.text[:500]
    return agent.submit(page, "consent-form", button=decision)


def test_authlib_client_completes_the_device_grant(quick: RunningServer) -> None:
    client = device_client(quick)
    user = make_user(quick.db_url)
    rp = OAuth2Client(client.client_id, token_endpoint_auth_method="none")
    resp = rp.request("POST", f"{quick.url}/oauth/device_authorization", withhold_token=True,
                      data={"client_id": client.client_id, "scope": "openid interapp"})
    grant = resp.json()
    assert set(grant) == {"device_code", "user_code", "verification_uri",
                          "verification_uri_complete", "expires_in", "interval"}
    assert grant["verification_uri"] == f"{quick.url}/device"
    assert grant["verification_uri_complete"].endswith(f"?user_code={grant['user_code']}")
    assert len(grant["user_code"]) == 9 and grant["user_code"][4] == "-"
    assert set(grant["user_code"].replace("-", "")) <= set("BCDFGHJKLMNPQRSTVWXZ")
    with pytest.raises(AuthlibError) as pending:
        rp.fetch_token(f"{quick.url}/oauth/token", grant_type=DEVICE_CODE,
                       device_code=grant["device_code"])
    assert pending.value.error == "authorization_pending"
    # the user types the code lower-case, without the dash
    done = type_code(quick, grant["user_code"].replace("-", "").lower(), user.username)
    assert done.status_code == 200 and "Device connected" in done.text
    time.sleep(grant["interval"] + 0.2)
    token = rp.fetch_token(f"{quick.url}/oauth/token", grant_type=DEVICE_CODE,
                           device_code=grant["device_code"])
    assert token["id_token"] and token["scope"] == "openid interapp"
    me = httpx.get(f"{quick.url}/v1/me", headers=bearer(token["access_token"]), timeout=10)
    assert me.json()["username"] == user.username
    time.sleep(grant["interval"] + 0.2)
    assert_oauth_error(poll(quick, client, grant["device_code"]), 400, "invalid_grant")


def test_polling_too_fast_is_slow_down_and_the_interval_grows(quick: RunningServer) -> None:
    client = device_client(quick)
    grant = start(quick, client)
    assert_oauth_error(poll(quick, client, grant["device_code"]), 400, "authorization_pending")
    fast = assert_oauth_error(poll(quick, client, grant["device_code"]), 400, "slow_down")
    assert "6 s" in fast["error_description"]  # 1 s + 5 s (RFC 8628 §3.5)


def test_denied_is_access_denied(quick: RunningServer) -> None:
    client = device_client(quick)
    user = make_user(quick.db_url)
    grant = start(quick, client)
    done = type_code(quick, grant["user_code"], user.username, decision="consent-deny")
    assert "Request denied" in done.text
    assert_oauth_error(poll(quick, client, grant["device_code"]), 400, "access_denied")


def test_an_expired_device_code_is_expired_token(quick: RunningServer) -> None:
    client = device_client(quick)
    user = make_user(quick.db_url)
    grant = start(quick, client)
    time.sleep(grant["expires_in"] + 0.5)
    assert_oauth_error(poll(quick, client, grant["device_code"]), 400, "expired_token")
    # the page no longer takes the code either
    agent = Agent(quick.url)
    page = agent.submit(agent.http.get("/device"), "device-form", user_code=grant["user_code"])
    assert page.status_code == 400 and "not valid" in page.text
    assert "signin-form" not in forms(page.text) and user.username not in page.text
    agent.close()


def test_wrong_codes_and_unknown_devices(quick: RunningServer) -> None:
    client = device_client(quick)
    agent = Agent(quick.url)
    page = agent.submit(agent.http.get("/device"), "device-form", user_code="BCDF-GHJK")
    assert page.status_code == 400 and "not valid" in page.text
    assert_oauth_error(poll(quick, client, "ia_dc_nonsense"), 400, "invalid_grant")
    other = device_client(quick)
    grant = start(quick, client)
    assert_oauth_error(poll(quick, other, grant["device_code"]), 400, "invalid_grant")
    agent.close()


def test_wrong_codes_count_against_the_address(db_url: str) -> None:
    """RFC 8628 §5.1: guessing user codes hits the per-address limit of the login limiter."""
    with RunningServer(app_name("guess"), db_url, login_failures_per_address=3) as srv:
        agent = Agent(srv.url)
        for _ in range(3):
            page = agent.submit(agent.http.get("/device"), "device-form", user_code="BBBBBBBB")
            assert page.status_code == 400
        client = device_client(srv)
        grant = start(srv, client)
        page = agent.submit(agent.http.get("/device"), "device-form",
                            user_code=grant["user_code"])
        assert page.status_code == 429  # even the right code waits now
        agent.close()


def test_only_clients_with_the_device_grant(server: RunningServer, http: httpx.Client) -> None:
    client = make_oauth_client(server.db_url)  # default grants: no device_code
    resp = http.post("/oauth/device_authorization", auth=client.basic(), data={"scope": ""})
    assert_oauth_error(resp, 400, "unauthorized_client")
    public = device_client(server)
    resp = http.post("/oauth/device_authorization", data={"client_id": public.client_id,
                                                         "scope": "openid email"})
    assert_oauth_error(resp, 400, "invalid_scope")
    resp = http.post("/oauth/device_authorization", data={"client_id": "ia_nobody"})
    assert_oauth_error(resp, 401, "invalid_client")
    # the device-only client may not use the password grant
    user = make_user(server.db_url)
    resp = http.post("/oauth/token", data={"grant_type": "password", "client_id":
                                           public.client_id, "username": user.username,
                                           "password": PASSWORD})
    assert_oauth_error(resp, 400, "unauthorized_client")
