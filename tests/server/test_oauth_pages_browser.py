"""The sign-in, consent and device pages in a real headless Chromium (Debian's, driven by
Playwright exactly as the web UI suite does: ``web_kit.ensure_chromium``, no browser download).

The browser follows the server's real redirect to the client's redirect URI; only that last
request, to a host that does not exist (``rp.example``), is answered by Playwright's router,
which records the URL with the code, state and iss.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from browser_kit import browser, off_loop, screenshot  # noqa: F401 - browser: the fixture
from oauth_kit import CALLBACK, DEVICE_CODE, auth_params, make_oauth_client, pkce, query_of
from server_kit import PASSWORD, RunningServer, make_user


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('pages') / 's.db'}"
    # "arena" as in the docs' pictures: no Redis here, so the name need not be unique
    with RunningServer("arena", url, device_poll_interval=1) as srv:
        yield srv


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:  # noqa: F811 - the fixture
    context = browser.new_context()
    p = context.new_page()
    yield p
    context.close()


def catch_callback(page: Any) -> list[str]:
    """Answer requests to the (non-existent) client and record their URLs."""
    seen: list[str] = []

    def answer(route: Any) -> None:
        seen.append(route.request.url)
        route.fulfill(status=200, content_type="text/html",
                      body="<!doctype html><title>client</title><p id=back>back at the client")

    page.route("https://rp.example/**", answer)
    return seen


def test_sign_in_and_allow_in_the_browser(site: RunningServer, page: Any) -> None:
    client = off_loop(lambda: make_oauth_client(site.db_url, name="Matrix homeserver"))
    user = off_loop(lambda: make_user(site.db_url, "alice", display_name="Alice"))
    verifier, challenge = pkce()
    params = auth_params(client, challenge, nonce="browser-nonce")
    seen = catch_callback(page)
    page.goto(str(httpx.URL(f"{site.url}/oauth/authorize", params=params)))
    assert page.title() == f"Sign in to {site.settings.app}"
    assert "Matrix homeserver" in page.inner_text("main")
    page.fill("#signin-username", user.username)
    page.fill("#signin-password", "not the password")
    page.click("#signin-submit")
    assert page.inner_text("#signin-error") == "Invalid username or password."
    assert page.input_value("#signin-username") == user.username  # kept; password is not
    assert page.input_value("#signin-password") == ""
    page.set_viewport_size({"width": 900, "height": 640})
    page.screenshot(path=str(screenshot("oauth-sign-in")))
    page.fill("#signin-password", PASSWORD)
    page.click("#signin-submit")
    page.wait_for_selector("#consent-allow")
    assert page.inner_text("#consent-user") == user.username
    scopes = page.inner_text("#consent-scopes")
    assert "confirm who you are" in scopes and "username and display name" in scopes
    page.screenshot(path=str(screenshot("oauth-consent")))
    page.click("#consent-allow")
    page.wait_for_selector("#back")
    got = query_of(seen[-1])
    assert seen[-1].startswith(CALLBACK + "?")
    assert got["state"] == params["state"] and got["iss"] == site.issuer
    resp = httpx.post(f"{site.url}/oauth/token", auth=(client.client_id, client.secret or ""),
                      timeout=10, data={"grant_type": "authorization_code", "code": got["code"],
                                        "code_verifier": verifier, "redirect_uri": CALLBACK})
    assert resp.status_code == 200 and resp.json()["id_token"]
    # signed in: the next request goes straight to the consent page; Deny says access_denied
    page.goto(str(httpx.URL(f"{site.url}/oauth/authorize",
                            params=auth_params(client, pkce()[1]))))
    page.click("#consent-deny")
    page.wait_for_selector("#back")
    assert query_of(seen[-1])["error"] == "access_denied"


def test_the_device_page_in_the_browser(site: RunningServer, page: Any) -> None:
    client = off_loop(lambda: make_oauth_client(site.db_url, public=True, redirect_uris=(),
                                                grants=(DEVICE_CODE,), name="Console"))
    user = off_loop(lambda: make_user(site.db_url))
    grant = httpx.post(f"{site.url}/oauth/device_authorization", timeout=10,
                       data={"client_id": client.client_id, "scope": "profile interapp"}).json()
    page.goto(grant["verification_uri"])
    page.fill("#device-code", "BBBB-BBBB")
    page.click("#device-submit")
    assert "not valid" in page.inner_text("#device-error")
    page.goto(grant["verification_uri_complete"])
    assert page.input_value("#device-code") == grant["user_code"]
    page.click("#device-submit")
    page.fill("#signin-username", user.username)
    page.fill("#signin-password", PASSWORD)
    page.click("#signin-submit")
    assert "Console" in page.inner_text("#consent-h")
    page.click("#consent-allow")
    assert page.inner_text("#done-h") == "Device connected"
    resp = httpx.post(f"{site.url}/oauth/token", timeout=10, data={
        "grant_type": DEVICE_CODE, "device_code": grant["device_code"],
        "client_id": client.client_id})
    assert resp.status_code == 200, resp.text
    me = httpx.get(f"{site.url}/v1/me", timeout=10,
                   headers={"Authorization": f"Bearer {resp.json()['access_token']}"})
    assert me.json()["username"] == user.username


def test_the_pages_cannot_be_framed(site: RunningServer, page: Any) -> None:
    """frame-ancestors 'none': Chromium refuses to show the page inside another site's frame."""
    client = off_loop(lambda: make_oauth_client(site.db_url))
    target = str(httpx.URL(f"{site.url}/oauth/authorize", params=auth_params(client,
                                                                              pkce()[1])))

    html = (f'<!doctype html><iframe id="f" src="{target}"></iframe>'
            f'<iframe id="ok" src="{site.url}/healthz"></iframe>').encode()  # ok: a control

    class Evil(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *_: Any) -> None:
            pass

    # another origin (another port), a real server on loopback (Chromium's private-network
    # rules would block frames of 127.0.0.1 in a page it cannot place)
    evil = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    thread = threading.Thread(target=evil.serve_forever, daemon=True)
    thread.start()
    try:
        page.goto(f"http://127.0.0.1:{evil.server_port}/")
        page.frame_locator("#ok").locator("body").wait_for()
        assert "ok" in page.frame_locator("#ok").locator("body").inner_text()
        page.wait_for_timeout(1000)
        assert page.frame_locator("#f").locator("#signin-form").count() == 0
    finally:
        evil.shutdown()
        thread.join(10)
