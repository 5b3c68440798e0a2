"""Browser and device linking, end to end: the host façade + driver + loopback listener + the
interapp plug-in against real interapp servers (their authorization endpoint, sign-in and
consent pages, device page and token endpoint), with a scripted person at a form-filling
browser (``interapp.testing.browser``). The real-Chromium drive is in test_linking_chromium.py.

Every failure path checks the RFC's error, as its typed class, and that nothing was written to
the vault (no link, no remembered way).
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from interapp.host import (
    AccessDenied,
    AuthorizationMismatch,
    Branch,
    ExpiredToken,
    Host,
    InvalidGrant,
    LinkMismatch,
    LinkState,
    NoInput,
    PromptDeclined,
    Scripted,
    WayUnavailable,
)
from interapp.secret import Secret
from interapp.server import accounts, passwords
from interapp.server.embedded import EmbeddedServer
from interapp.server.storage import Database
from interapp.testing.browser import BrowserUser, FormBrowser
from interapp.vault import Vault

pytestmark = pytest.mark.anyio

PW = {"alice@arena": "arena-pw-1", "alice@chatter": "chatter-pw-1",
      "carol@chatter": "carol-pw-1"}
LOOPBACK = "http://127.0.0.1/callback"
GRANTS = ("authorization_code", "urn:ietf:params:oauth:grant-type:device_code", "password",
          "refresh_token")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class World:
    tmp: Path
    arena: EmbeddedServer
    chatter: EmbeddedServer
    env: dict[str, str]

    @property
    def home(self) -> Path:
        return self.tmp / "host"

    def host(self) -> AbstractAsyncContextManager[Host]:
        return Host.open(self.home, env=self.env, call_timeout=20.0)

    def links(self) -> list[Any]:
        with Vault.open(self.home / "vault.db", env=self.env) as v:
            return list(v.list_links())

    def remembered_ways(self) -> list[str]:
        with Vault.open(self.home / "vault.db", env=self.env) as v:
            return [s.reveal() for ln in v.list_links()
                    if (s := v.get_secret(f"link_way:{ln.id}")) is not None]


async def _seed(tmp: Path) -> dict[str, tuple[str, Secret]]:
    clients = {}
    for app in ("arena", "chatter"):
        db = Database.open(f"sqlite:///{tmp}/{app}.db")
        async with db.begin() as conn:
            await accounts.create_user(conn, "alice", password_hash=passwords.hash_sync(
                Secret(PW[f"alice@{app}"])))
            if app == "chatter":
                await accounts.create_user(conn, "carol", password_hash=passwords.hash_sync(
                    Secret(PW["carol@chatter"])))
                cid, secret = await accounts.create_client(
                    conn, "host", public=False, redirect_uris=(LOOPBACK,), grant_types=GRANTS)
            else:
                cid, secret = await accounts.create_client(conn, "host", public=False)
            assert secret is not None
            clients[app] = (cid, secret)
        await db.close()
    return clients


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clients = await _seed(tmp_path)
    async with AsyncExitStack() as stack:
        arena = await stack.enter_async_context(
            EmbeddedServer("arena", f"sqlite:///{tmp_path}/arena.db"))
        chatter = await stack.enter_async_context(
            EmbeddedServer("chatter", f"sqlite:///{tmp_path}/chatter.db",
                           device_poll_interval=1, device_code_ttl=30))
        env = {"INTERAPP_VAULT_KEY": base64.b64encode(os.urandom(32)).decode(),
               "INTERAPP_VAULT_KEYRING": "0"}
        w = World(tmp_path, arena, chatter, env)
        async with w.host() as host:
            await host.set_local(arena.url, client_id=clients["arena"][0],
                                 client_secret=clients["arena"][1])
            await host.sign_in("alice", PW["alice@arena"])
            await host.add_target("chatter", plugin="interapp", server=chatter.url,
                                  client_id=clients["chatter"][0],
                                  client_secret=clients["chatter"][1])
        yield w


def _user(name: str = "alice", **kwargs: Any) -> tuple[BrowserUser, FormBrowser]:
    browser = FormBrowser(name, PW[f"{name}@chatter"], **kwargs)
    return BrowserUser(browser), browser


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def _nothing_stored(world: World) -> None:
    assert world.links() == [] and world.remembered_ways() == []


# --- the browser way -----------------------------------------------------------------------


async def test_browser_link_is_the_default_and_is_stored_with_its_way(world: World) -> None:
    user, browser = _user()
    try:
        async with world.host() as host:
            c = await host.connect("chatter", user)
            await user.settle()
        assert c.branch is Branch.PROMPT and c.account == "alice"
        assert (c.way, c.way_reason) == ("browser", "most_secure")
        assert "signing in through browser: the most secure way offered" in c.explain
        request = user.opened[0]
        sent = dict(parse_qsl(urlsplit(request.url).query))
        assert request.url.startswith(f"{world.chatter.url}/oauth/authorize?")
        assert sent["code_challenge_method"] == "S256" and len(sent["code_challenge"]) == 43
        assert sent["redirect_uri"] == request.redirect_uri
        assert request.redirect_uri.startswith("http://127.0.0.1:")
        assert request.redirect_uri.endswith("/callback")
        assert "code_verifier" not in request.url
        assert await request.completion.wait() is True
        back = dict(parse_qsl(urlsplit(browser.answers[-1]).query))
        assert back["state"] == sent["state"] and back["iss"] == world.chatter.url
        assert "Signed in" in browser.last_page  # the loopback listener answered the browser
        [link] = world.links()
        assert link.remote_account_name == "alice" and link.state is LinkState.LINKED
        assert world.remembered_ways() == ["browser"]
        async with world.host() as host:  # the stored link: no browser again
            again = await host.connect("chatter", NoInput())
            assert again.branch is Branch.STORED and again.way is None
    finally:
        await browser.aclose()


async def test_denied_consent_is_access_denied_and_stores_nothing(world: World) -> None:
    user, browser = _user(decision="deny")
    try:
        async with world.host() as host:
            with pytest.raises(AccessDenied) as info:
                await host.connect("chatter", user)
        assert info.value.code == "access_denied" and info.value.target == "chatter"
        assert await user.opened[0].completion.wait() is False
        await _nothing_stored(world)
    finally:
        await browser.aclose()


async def test_wrong_pkce_verifier_is_invalid_grant_and_stores_nothing(world: World) -> None:
    # the page is opened with another challenge than the host's verifier answers to
    other = "A" * 43
    user, browser = _user(tamper_url=lambda u: _with_query(u, code_challenge=other))
    try:
        async with world.host() as host:
            with pytest.raises(InvalidGrant) as info:
                await host.connect("chatter", user)
        assert info.value.code == "invalid_grant"
        await _nothing_stored(world)
    finally:
        await browser.aclose()


async def test_mismatched_redirect_uri_is_invalid_grant_and_stores_nothing(
        world: World) -> None:
    # the code is issued for another loopback port than the host redeems it with
    user, browser = _user(tamper_url=lambda u: _with_query(
        u, redirect_uri="http://127.0.0.1:9/callback"),
        answer_prefix="http://127.0.0.1:9/")

    def to_the_host(url: str) -> str:  # the browser still ends at the host's listener
        return f"{user.opened[0].redirect_uri}?{urlsplit(url).query}"

    browser.tamper_answer = to_the_host
    try:
        async with world.host() as host:
            with pytest.raises(InvalidGrant) as info:
                await host.connect("chatter", user)
        assert "redirect_uri" in info.value.message
        await _nothing_stored(world)
    finally:
        await browser.aclose()


async def test_replayed_code_is_invalid_grant_and_stores_nothing(world: World) -> None:
    first, browser = _user()
    try:
        async with world.host() as host:
            await host.connect("chatter", first)
            await first.settle()
            used = dict(parse_qsl(urlsplit(browser.answers[-1]).query))["code"]
            await host.unlink("chatter")
        await _nothing_stored(world)
        replay, browser2 = _user(tamper_answer=lambda u: _with_query(u, code=used))
        async with world.host() as host:
            with pytest.raises(InvalidGrant) as info:
                await host.connect("chatter", replay)
        assert "already used" in info.value.message
        await _nothing_stored(world)
        await browser2.aclose()
    finally:
        await browser.aclose()


@pytest.mark.parametrize("field", ["state", "iss"])
async def test_a_wrong_state_or_iss_is_dropped(world: World, field: str) -> None:
    value = "forged" if field == "state" else "http://evil.example"
    user, browser = _user(tamper_answer=lambda u: _with_query(u, **{field: value}))
    try:
        async with world.host() as host:
            with pytest.raises(AuthorizationMismatch) as info:
                await host.connect("chatter", user)
        assert info.value.code == "authorization_mismatch"
        await _nothing_stored(world)
    finally:
        await browser.aclose()


async def test_declining_to_open_the_browser_stores_nothing(world: World) -> None:
    browser = FormBrowser("alice", PW["alice@chatter"])
    user = BrowserUser(browser, decline=True)
    try:
        async with world.host() as host:
            with pytest.raises(PromptDeclined):
                await host.connect("chatter", user)
        await _nothing_stored(world)
    finally:
        await browser.aclose()


# --- the device way ------------------------------------------------------------------------


async def test_headless_links_with_a_device_code(world: World) -> None:
    browser = FormBrowser("alice", PW["alice@chatter"])
    user = BrowserUser(browser, headless=True)
    try:
        async with world.host() as host:
            c = await host.connect("chatter", user)
        assert (c.way, c.way_reason) == ("device", "headless")
        shown = user.codes[0]
        assert len(shown.user_code) == 9 and shown.user_code[4] == "-"
        assert shown.verification_uri == f"{world.chatter.url}/device"
        assert any("waiting for the code" in p for p in user.progress)
        assert "Device connected" in browser.last_page
        assert world.remembered_ways() == ["device"]
    finally:
        await browser.aclose()


async def test_device_denied_is_access_denied(world: World) -> None:
    user, browser = _user(decision="deny")
    try:
        async with world.host() as host:
            with pytest.raises(AccessDenied):
                await host.connect("chatter", user, via="device")
        await _nothing_stored(world)
    finally:
        await browser.aclose()


async def test_expired_device_code_is_expired_token(tmp_path: Path) -> None:
    clients = await _seed(tmp_path)
    async with AsyncExitStack() as stack:
        arena = await stack.enter_async_context(
            EmbeddedServer("arena", f"sqlite:///{tmp_path}/arena.db"))
        chatter = await stack.enter_async_context(
            EmbeddedServer("chatter", f"sqlite:///{tmp_path}/chatter.db",
                           device_poll_interval=1, device_code_ttl=2))
        env = {"INTERAPP_VAULT_KEY": base64.b64encode(os.urandom(32)).decode(),
               "INTERAPP_VAULT_KEYRING": "0"}
        w = World(tmp_path, arena, chatter, env)

        class NobodyTypes(BrowserUser):
            async def show_code(self, request: Any) -> None:
                self.codes.append(request)  # shown, but nobody enters it

        browser = FormBrowser("alice", PW["alice@chatter"])
        async with w.host() as host:
            await host.set_local(arena.url, client_id=clients["arena"][0],
                                 client_secret=clients["arena"][1])
            await host.sign_in("alice", PW["alice@arena"])
            await host.add_target("chatter", plugin="interapp", server=chatter.url,
                                  client_id=clients["chatter"][0],
                                  client_secret=clients["chatter"][1])
            with pytest.raises(ExpiredToken) as info:
                await host.connect("chatter", NobodyTypes(browser), via="device")
        await browser.aclose()
        assert info.value.code == "expired_token"
        await _nothing_stored(w)


async def test_a_cancelled_device_sign_in_stops_polling(world: World) -> None:
    class Cancels(BrowserUser):
        async def show_code(self, request: Any) -> None:
            request.completion.cancel()

    browser = FormBrowser("alice", PW["alice@chatter"])
    try:
        async with world.host() as host:
            with pytest.raises(PromptDeclined):
                await host.connect("chatter", Cancels(browser), via="device")
        await _nothing_stored(world)
    finally:
        await browser.aclose()


# --- choosing the way, re-authentication ---------------------------------------------------


async def test_via_password_still_works_and_via_unknown_way_is_refused(world: World) -> None:
    async with world.host() as host:
        c = await host.connect("chatter", Scripted({"username": "alice",
                                                    "password": PW["alice@chatter"]}))
        assert (c.way, c.way_reason) == ("password", "only_way")
    assert world.remembered_ways() == ["password"]


async def test_a_way_this_face_cannot_do_is_way_unavailable(world: World) -> None:
    async with world.host() as host:
        with pytest.raises(WayUnavailable) as info:
            await host.connect("chatter", Scripted({"username": "alice", "password": "x"}),
                               via="browser")
    assert "this face cannot do it" in info.value.message
    await _nothing_stored(world)


async def test_reauth_uses_the_same_way_and_repairs_the_same_link(world: World) -> None:
    user, browser = _user()
    try:
        async with world.host() as host:
            await host.connect("chatter", user)
            await user.settle()
        [before] = world.links()
        with Vault.open(world.home / "vault.db", env=world.env) as v:
            v.set_state(before.id, LinkState.NEEDS_REAUTH, "the grant was revoked")
        again, browser2 = _user()
        async with world.host() as host:
            c = await host.connect("chatter", again)
            await again.settle()
        assert c.branch is Branch.REAUTH and (c.way, c.way_reason) == ("browser", "remembered")
        assert again.opened[0].expected_account == "alice"
        [after] = world.links()
        assert after.id == before.id and after.state is LinkState.LINKED
        await browser2.aclose()
    finally:
        await browser.aclose()


async def test_reauth_through_the_browser_as_another_account_is_refused(world: World) -> None:
    user, browser = _user()
    try:
        async with world.host() as host:
            await host.connect("chatter", user)
            await user.settle()
        [before] = world.links()
        with Vault.open(world.home / "vault.db", env=world.env) as v:
            v.set_state(before.id, LinkState.NEEDS_REAUTH, "the grant was revoked")
        carol, browser2 = _user("carol")
        async with world.host() as host:
            with pytest.raises(LinkMismatch):
                await host.connect("chatter", carol)
        [after] = world.links()
        assert after.id == before.id and after.remote_account_name == "alice"
        assert after.state is LinkState.NEEDS_REAUTH
        await browser2.aclose()
    finally:
        await browser.aclose()


async def test_a_client_not_allowed_the_browser_or_device_falls_back_to_the_password(
        world: World) -> None:
    db = Database.open(f"sqlite:///{world.tmp}/chatter.db")
    async with db.begin() as conn:  # what every host client could do before issue 14
        cid, secret = await accounts.create_client(conn, "old host", public=False)
    await db.close()

    class Anything(BrowserUser):
        async def ask(self, request: Any) -> Any:
            return await Scripted({"username": "alice",
                                   "password": PW["alice@chatter"]}).ask(request)

    browser = FormBrowser("alice", PW["alice@chatter"])
    try:
        async with world.host() as host:
            await host.add_target("old", plugin="interapp", server=world.chatter.url,
                                  client_id=cid, client_secret=secret)
            c = await host.connect("old", Anything(browser))
        assert (c.way, c.way_reason) == ("password", "only_way")
        assert "would not start browser" in c.explain and "trying device" in c.explain
        assert "would not start device" in c.explain and "trying password" in c.explain
        assert browser.visited == []  # no page was ever opened
    finally:
        await browser.aclose()
