"""The ``xmpp`` plug-in passes the conformance kit against a real Prosody and a real ejabberd,
both on 127.0.0.1 (one Prosody for the module, the session's ejabberd)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest
from xmpp_kit import XmppServer, new_account

from interapp.plugins.xmpp.demo import make_buddies
from interapp.secret import Secret
from interapp.testing import Account, Harness, PluginConformance, Target
from interapp.testing.ejabberd import EjabberdServer
from interapp.testing.prosody import ProsodyServer

pytest_plugins = ["interapp.testing.ejabberd"]


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    """One Prosody for the module; fresh accounts per test."""
    with ProsodyServer(tmp_path_factory.mktemp("prosody-conformance")) as server:
        yield server


class XmppHarness(Harness):
    plugin = "xmpp"

    def __init__(self, server: XmppServer) -> None:
        self.server = server

    async def target(self) -> tuple[Target, Secret | None]:
        return Target("t", "xmpp", self.server.url), None

    async def new_account(self) -> Account:
        jid, password = await asyncio.to_thread(new_account, self.server)
        return Account(username=jid, password=password)

    async def make_buddies(self, a: Account, b: Account) -> None:
        # by the plug-in itself: a subscription request from a, accepted by b
        await make_buddies(self.server.url, (a.username, a.password), (b.username, b.password))

    async def change_password(self, account: Account) -> Account:
        new = secrets.token_urlsafe(12)
        await asyncio.to_thread(self.server.set_password, account.username, new)
        return Account(account.username, new)

    async def restart_server(self) -> None:
        await asyncio.to_thread(self.server.restart)


class TestXmppPlugin(PluginConformance):
    """On Prosody."""

    @pytest.fixture
    def harness(self, prosody: ProsodyServer) -> Harness:
        return XmppHarness(prosody)


class TestXmppPluginOnEjabberd(PluginConformance):
    """On ejabberd."""

    @pytest.fixture
    def harness(self, ejabberd: EjabberdServer) -> Harness:
        return XmppHarness(ejabberd)
