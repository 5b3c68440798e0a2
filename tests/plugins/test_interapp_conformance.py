"""The shipped ``interapp`` plug-in passes the conformance kit against real interapp servers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from interapp.secret import Secret
from interapp.server import accounts, passwords, social
from interapp.server.oauth import issue
from interapp.server.storage import Database
from interapp.testing import Account, Harness, HomeApp, PluginConformance, Target
from interapp.testing.browser import FormBrowser
from interapp.testing.servers import ThreadedServer


class Servers:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.chatter = ThreadedServer("chatter", folder / "chatter.db").start()
        # the host's client may link every way: the browser (code + PKCE to a loopback
        # redirect URI, any port), a device code, or the password
        self.client = self.chatter.create_client(
            redirect_uris=("http://127.0.0.1/callback",),
            grant_types=("authorization_code", "urn:ietf:params:oauth:grant-type:device_code",
                         "password", "refresh_token"))
        self.shared: ThreadedServer | None = None
        self.shared_client: tuple[str, Secret | None] | None = None

    def trusting(self, home: HomeApp) -> tuple[ThreadedServer, tuple[str, Secret | None]]:
        if self.shared is None:
            self.shared = ThreadedServer("arena-chat", self.folder / "shared.db").start()

            async def setup() -> tuple[str, Secret | None]:
                db = Database.open(self.shared.db_url)  # type: ignore[union-attr]
                try:
                    async with db.begin() as conn:
                        await accounts.trust_issuer(conn, home.url, jwks=None, jwks_url=None)
                        return await accounts.create_client(conn, "host", public=False)
                finally:
                    await db.close()

            self.shared_client = self.shared.call(setup)
        assert self.shared_client is not None
        return self.shared, self.shared_client

    def stop(self) -> None:
        self.chatter.stop()
        if self.shared is not None:
            self.shared.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(tmp_path_factory.mktemp("interapp-conformance"))
    try:
        yield s
    finally:
        s.stop()


class InterappHarness(Harness):
    plugin = "interapp"

    def __init__(self, servers: Servers) -> None:
        self.s = servers

    async def target(self) -> tuple[Target, Secret | None]:
        cid, secret = self.s.client
        return Target("t", "interapp", self.s.chatter.url, cid), secret

    async def shared_target(self, home: HomeApp) -> tuple[Target, Secret | None] | None:
        server, (cid, secret) = self.s.trusting(home)
        return Target("shared", "interapp", server.url, cid, "shared"), secret

    def _db(self, fn):  # type: ignore[no-untyped-def]
        async def run():  # type: ignore[no-untyped-def]
            db = Database.open(self.s.chatter.db_url)
            try:
                async with db.begin() as conn:
                    return await fn(conn)
            finally:
                await db.close()

        return self.s.chatter.call(run)

    async def new_account(self) -> Account:
        username, password = f"u{secrets.token_hex(5)}", secrets.token_urlsafe(12)
        hashed = passwords.hash_sync(Secret(password))
        self._db(lambda c: accounts.create_user(c, username, password_hash=hashed))
        return Account(username, password)

    async def make_buddies(self, a: Account, b: Account) -> None:
        async def go(conn):  # type: ignore[no-untyped-def]
            await social.make_buddies(conn, await accounts.require_user(conn, a.username),
                                      await accounts.require_user(conn, b.username))

        self._db(go)

    async def change_password(self, account: Account) -> Account:
        new = secrets.token_urlsafe(12)
        hashed = passwords.hash_sync(Secret(new))

        async def go(conn):  # type: ignore[no-untyped-def]
            user = await accounts.require_user(conn, account.username)
            await accounts.set_password_hash(conn, user.id, hashed)
            await issue.revoke_user(conn, user.id)

        self._db(go)
        return Account(account.username, new)

    async def restart_server(self) -> None:
        self.s.chatter.restart()

    def browser(self, account: Account, *, decision: str = "allow") -> FormBrowser | None:
        return FormBrowser(account.username, account.password, decision=decision)


class TestInterappPlugin(PluginConformance):
    @pytest.fixture
    def harness(self, servers: Servers) -> Harness:
        return InterappHarness(servers)
