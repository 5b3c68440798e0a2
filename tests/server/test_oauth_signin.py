"""The sign-in and consent pages as HTTP: CSRF, headers, no account enumeration, and the same
per-account and per-address limits as the token endpoint's password grant (one limiter)."""

from __future__ import annotations

import httpx
from oauth_kit import CALLBACK, Agent, auth_params, forms, make_oauth_client, pkce, query_of
from server_kit import (
    PASSWORD,
    RunningServer,
    assert_oauth_error,
    bearer,
    make_client,
    make_user,
)


def signin_page(agent: Agent, server: RunningServer) -> httpx.Response:
    client = make_oauth_client(server.db_url)
    page = agent.http.get("/oauth/authorize", params=auth_params(client, pkce()[1]))
    assert page.status_code == 200 and "signin-form" in forms(page.text)
    return page


def test_pages_forbid_framing_and_leak_nothing(server: RunningServer) -> None:
    agent = Agent(server.url)
    page = signin_page(agent, server)
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "script-src" not in csp  # no script at all
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["content-type"].startswith("text/html")
    cookie = page.headers["set-cookie"]
    assert "interapp_csrf=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    user = make_user(server.db_url)
    consent = agent.submit(page, "signin-form", username=user.username, password=PASSWORD)
    assert "frame-ancestors 'none'" in consent.headers["content-security-policy"]
    assert "form-action 'self';" in page.headers["content-security-policy"]
    # the consent page's form ends at the client, which may redirect further (browsers check
    # form-action along the whole chain): no form-action there
    assert "form-action" not in consent.headers["content-security-policy"]
    assert PASSWORD not in consent.text
    assert httpx.get(f"{server.url}/oauth/pages.css", timeout=10).headers[
        "content-type"].startswith("text/css")
    agent.close()


def test_a_post_without_the_csrf_token_or_from_another_site_is_refused(
        server: RunningServer) -> None:
    user = make_user(server.db_url)
    agent = Agent(server.url)
    page = signin_page(agent, server)
    form = forms(page.text)["signin-form"]
    good = {**form.fields, "username": user.username, "password": PASSWORD}
    cases = [
        ({**good, "csrf": "0" * 64}, {"Origin": server.url}),  # wrong token
        ({k: v for k, v in good.items() if k != "csrf"}, {}),  # no token
        (good, {"Origin": "https://evil.example"}),  # posted from another site
    ]
    for data, headers in cases:
        resp = agent.http.post("/oauth/authorize", data=data, headers=headers)
        assert resp.status_code == 400, data
        assert "consent-form" not in forms(resp.text)
        assert "interapp_session=" not in resp.headers.get("set-cookie", "")
    # a browser without the CSRF cookie (a forged cross-site post carries none)
    with httpx.Client(base_url=server.url, timeout=10) as stranger:
        resp = stranger.post("/oauth/authorize", data=good)
        assert resp.status_code == 400 and "consent-form" not in forms(resp.text)
    # the real form still works
    resp = agent.submit(page, "signin-form", username=user.username, password=PASSWORD)
    assert "consent-form" in forms(resp.text)
    agent.close()


def test_no_account_enumeration(server: RunningServer) -> None:
    """Unknown user, wrong password, password-less account: one answer."""
    user = make_user(server.db_url)
    sso_only = make_user(server.db_url, password=None)
    answers = set()
    for username, password in ((user.username, "wrong password"), ("nobody-here", PASSWORD),
                               (sso_only.username, PASSWORD)):
        agent = Agent(server.url)
        page = agent.submit(signin_page(agent, server), "signin-form", username=username,
                            password=password)
        error = page.text.split('id="signin-error">', 1)[1].split("<", 1)[0]
        answers.add((page.status_code, error))
        agent.close()
    assert answers == {(401, "Invalid username or password.")}


def test_the_page_and_the_password_grant_share_one_limit(server: RunningServer) -> None:
    """Five failures on the page lock the account for the token endpoint too (and back)."""
    user = make_user(server.db_url)
    limit = server.settings.login_failures_per_account
    agent = Agent(server.url)
    page = signin_page(agent, server)
    for _ in range(limit):
        page = agent.submit(page, "signin-form", username=user.username, password="nope")
        assert page.status_code == 401
    page = agent.submit(page, "signin-form", username=user.username, password=PASSWORD)
    assert page.status_code == 429 and "Too many failed sign-ins" in page.text
    assert "consent-form" not in forms(page.text)  # even the right password is not checked
    client = make_client(server.db_url)
    with server.client() as http:
        resp = http.post("/oauth/token", auth=client.basic(), data={
            "grant_type": "password", "username": user.username, "password": PASSWORD})
        assert_oauth_error(resp, 429, "slow_down")
        # and the other way round: failures at the token endpoint lock the page
        other = make_user(server.db_url)
        for _ in range(limit):
            http.post("/oauth/token", auth=client.basic(), data={
                "grant_type": "password", "username": other.username, "password": "nope"})
    page = agent.submit(signin_page(agent, server), "signin-form", username=other.username,
                        password=PASSWORD)
    assert page.status_code == 429
    agent.close()


def test_sign_out_and_sign_in_as_someone_else(server: RunningServer) -> None:
    ann, bob = make_user(server.db_url), make_user(server.db_url)
    client = make_oauth_client(server.db_url)
    agent = Agent(server.url)
    verifier, challenge = pkce()
    page = agent.http.get("/oauth/authorize", params=auth_params(client, challenge))
    page = agent.submit(page, "signin-form", username=ann.username, password=PASSWORD)
    assert ann.username in page.text
    page = agent.submit(page, "signout-form")
    assert "signin-form" in forms(page.text)
    page = agent.submit(page, "signin-form", username=bob.username, password=PASSWORD)
    done = agent.submit(page, "consent-form", button="consent-allow")
    got = query_of(done.headers["location"])
    with server.client() as http:
        tokens = http.post("/oauth/token", auth=(client.client_id, client.secret or ""), data={
            "grant_type": "authorization_code", "code": got["code"], "redirect_uri": CALLBACK,
            "code_verifier": verifier})
        assert tokens.status_code == 200, tokens.text
        me = http.get("/v1/me", headers=bearer(tokens.json()["access_token"]))
        assert me.json()["username"] == bob.username
    agent.close()


def test_a_concurrent_burst_on_the_page_gets_at_most_the_limit(server: RunningServer) -> None:
    """The attempt is reserved before argon2 (as for the password grant): of 12 wrong
    passwords sent at once at most 5 are checked, and the right one after them is refused."""
    import asyncio

    user = make_user(server.db_url)
    agent = Agent(server.url)
    page = signin_page(agent, server)
    form = forms(page.text)["signin-form"]
    cookies = dict(agent.http.cookies)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, cookies=cookies,
                                     headers={"Origin": server.url}) as http:
            sends = [http.post("/oauth/authorize", data={
                **form.fields, "username": user.username, "password": f"wrong-{i}"})
                for i in range(12)]
            return [r.status_code for r in await asyncio.gather(*sends)]

    statuses = asyncio.run(burst())
    assert statuses.count(401) == server.settings.login_failures_per_account, statuses
    assert statuses.count(429) == 12 - server.settings.login_failures_per_account
    last = agent.submit(page, "signin-form", username=user.username, password=PASSWORD)
    assert last.status_code == 429 and "consent-form" not in forms(last.text)
    agent.close()
