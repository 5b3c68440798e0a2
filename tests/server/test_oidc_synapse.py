"""A real relying party: Synapse signs its users in through an interapp app (OpenID Connect).

Synapse (``.peers/synapse``, ``make peers``) is configured with ``oidc_providers`` pointing at
the app's discovery URL and a confidential client made as ``admin add-client`` makes it. Real
Chromium follows Synapse's SSO redirect to the app's sign-in and consent pages and back to
Synapse's callback (Synapse redeems the code with PKCE, checks the ID token and its nonce against
the app's JWKS), ending at the Matrix client's URL with a ``loginToken``; ``m.login.token``
accepts it and the Matrix account is the interapp user's. No Matrix password anywhere.

``skip_verification`` is set only because both servers speak plain http on loopback (Synapse
otherwise insists on https endpoints).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_kit import browser, off_loop  # noqa: F401 - browser: the Chromium fixture
from oauth_kit import make_oauth_client, query_of
from server_kit import PASSWORD, RunningServer, make_user

from interapp.testing.servers import free_port
from interapp.testing.synapse import SynapseServer

pytestmark = pytest.mark.slow
MATRIX_CLIENT = "http://matrix-client.example/"


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('arena') / 's.db'}"
    with RunningServer("arena", url) as srv:
        yield srv


@pytest.fixture(scope="module")
def synapse(arena: RunningServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[SynapseServer]:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/_synapse/client/oidc/callback"
    client = make_oauth_client(arena.db_url, name="Matrix", redirect_uris=(callback,),
                               grants=("authorization_code",))
    assert client.secret is not None
    provider = {
        "idp_id": "arena", "idp_name": "arena", "issuer": arena.issuer, "discover": True,
        "client_id": client.client_id, "client_secret": client.secret,
        "client_auth_method": "client_secret_basic", "scopes": ["openid", "profile"],
        "pkce_method": "always", "skip_verification": True,
        "user_mapping_provider": {"config": {
            "localpart_template": "{{ user.preferred_username }}",
            "display_name_template": "{{ user.name }}"}}}
    server = SynapseServer(tmp_path_factory.mktemp("synapse"), port=port, extra_config={
        "public_baseurl": f"http://127.0.0.1:{port}/", "oidc_providers": [provider],
        "sso": {"client_whitelist": [MATRIX_CLIENT]}})
    with server:
        yield server


def test_synapse_signs_alice_in_through_interapp(arena: RunningServer, synapse: SynapseServer,
                                                 browser: Any) -> None:  # noqa: F811
    alice = off_loop(lambda: make_user(arena.db_url, "alice", display_name="Alice Arena"))
    flows = httpx.get(f"{synapse.url}/_matrix/client/v3/login", timeout=10).json()["flows"]
    sso = next(f for f in flows if f["type"] == "m.login.sso")
    assert {"id": "oidc-arena", "name": "arena"}.items() <= sso["identity_providers"][0].items()

    context = browser.new_context()
    page = context.new_page()
    landed: list[str] = []

    def matrix_client(route: Any) -> None:
        landed.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<p id=done>logged in")

    page.route(f"{MATRIX_CLIENT}**", matrix_client)
    try:
        page.goto(f"{synapse.url}/_matrix/client/v3/login/sso/redirect/oidc-arena"
                  f"?redirectUrl={MATRIX_CLIENT}")
        page.wait_for_selector("#signin-form")
        assert page.url.startswith(f"{arena.url}/oauth/authorize?")
        sent = query_of(page.url)  # what Synapse asked for
        assert sent["code_challenge_method"] == "S256" and sent["nonce"]
        assert sent["scope"] == "openid profile"
        page.fill("#signin-username", "alice")
        page.fill("#signin-password", PASSWORD)
        page.click("#signin-submit")
        page.wait_for_selector("#consent-allow")
        assert "interapp scope" not in page.inner_text("#consent-scopes")
        assert "buddies" not in page.inner_text("#consent-scopes")  # only who alice is
        page.click("#consent-allow")
        page.wait_for_selector("#done", timeout=30_000)
    finally:
        context.close()
    token = query_of(landed[-1])["loginToken"]
    login = httpx.post(f"{synapse.url}/_matrix/client/v3/login", timeout=10,
                       json={"type": "m.login.token", "token": token})
    assert login.status_code == 200, login.text
    assert login.json()["user_id"] == "@alice:localhost"
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    whoami = httpx.get(f"{synapse.url}/_matrix/client/v3/account/whoami", headers=headers,
                       timeout=10)
    assert whoami.json()["user_id"] == "@alice:localhost"
    profile = httpx.get(f"{synapse.url}/_matrix/client/v3/profile/@alice:localhost",
                        headers=headers, timeout=10).json()
    assert profile["displayname"] == "Alice Arena"
    # a login token is single-use too
    again = httpx.post(f"{synapse.url}/_matrix/client/v3/login", timeout=10,
                       json={"type": "m.login.token", "token": token})
    assert again.status_code == 403
    assert alice.username == "alice"


def test_synapse_reads_the_discovery_document(arena: RunningServer) -> None:
    """What Synapse's provider code needs from discovery, independent of the browser flow."""
    doc = httpx.get(f"{arena.url}/.well-known/openid-configuration", timeout=10).json()
    assert doc["issuer"] == arena.issuer
    assert "code" in doc["response_types_supported"]
    assert "S256" in doc["code_challenge_methods_supported"]
    assert "client_secret_basic" in doc["token_endpoint_auth_methods_supported"]
    assert Path(doc["jwks_uri"]).name == "jwks.json"
