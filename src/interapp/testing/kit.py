"""The plug-in conformance kit: one fixed set of scenarios every plug-in must pass.

Theory of operation: a plug-in author subclasses :class:`PluginConformance` in a test module and
provides a ``harness`` fixture returning a :class:`Harness` for a *real* server of their network
(account creation, buddies, password change, restart). The kit brings the rest: a real local
application (an interapp server in a thread, the ``interapp_home`` fixture of this pytest
plug-in), a real :class:`~interapp.host.Host` — the public SDK, exactly as applications use
it — with its vault in a temporary folder, and the scenarios: the claim-1 branches, buddy list,
presence and messages both ways, history paging, reconnect after a server restart with nothing
lost or doubled, and unlink revoking remotely. The other side of every conversation is the
same plug-in, driven directly and logged in as a second account, so the kit also checks the
raw events a plug-in yields.

Events a plug-in yields must carry normalized data: ``message`` events ``from``, ``to``,
``body``; ``presence`` events ``username``, ``state``, ``status_text``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from interapp.errors import InterappError, LinkError, NeedsReauth
from interapp.host import Branch, Host, LinkState, Message, PresenceState, Scripted, events
from interapp.host.config import Target
from interapp.host.registry import discover
from interapp.plugins.contract import Credential, Plugin, PluginEvent, TargetConfig
from interapp.secret import Secret
from interapp.testing.browser import FormBrowser
from interapp.testing.kit_linkways import LinkWayScenarios

HostFactory = Callable[[], AbstractAsyncContextManager[Host]]


@dataclass(frozen=True)
class Account:
    """A remote account: what the user types at the prompt, and how buddies see it."""

    username: str
    password: str
    handle: str = ""  # the name other users see in buddy lists and events (default: username)

    @property
    def seen_as(self) -> str:
        """The name under which buddies and events show this account."""
        return self.handle or self.username


@dataclass(frozen=True)
class HomeApp:
    """The local application the kit's host logs in to."""

    url: str
    client_id: str
    client_secret: Secret
    new_user: Callable[[], tuple[str, str]]


class Harness(ABC):
    """What a plug-in author provides: a real server of their network, driven for the kit."""

    plugin: ClassVar[str]
    #: seconds to wait for eventually consistent things (presence fan-out, federation…)
    settle: ClassVar[float] = 0.0

    def browser(self, account: Account, *, decision: str = "allow") -> FormBrowser | None:
        """A person at a browser who signs in as ``account`` on the pages the plug-in's
        browser and device link ways lead to, and allows (``decision="deny"``: denies); None
        when the kit cannot drive them (then a declared browser or device way fails the
        kit's scenarios)."""
        return None

    @abstractmethod
    async def target(self) -> tuple[Target, Secret | None]:
        """A target (separate account system) and its client secret, if any."""

    async def shared_target(self, home: HomeApp) -> tuple[Target, Secret | None] | None:
        """A target that trusts ``home``'s accounts, or None when the plug-in cannot."""
        return None

    @abstractmethod
    async def new_account(self) -> Account:
        """A fresh account on the server."""

    @abstractmethod
    async def make_buddies(self, a: Account, b: Account) -> None:
        """Make ``a`` and ``b`` buddies (both ways)."""

    @abstractmethod
    async def change_password(self, account: Account) -> Account:
        """Change the password so that stored credentials are refused; return the new one."""

    @abstractmethod
    async def restart_server(self) -> None:
        """Restart the server, keeping its data."""


def _answers(account: Account) -> Scripted:
    return Scripted({"username": account.username, "password": account.password})


class PluginConformance(LinkWayScenarios):
    """The scenarios. Subclass it and provide the ``harness`` fixture."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        """The kit runs on asyncio."""
        return "asyncio"

    @pytest.fixture
    async def host_factory(self, interapp_home: HomeApp, harness: Harness,
                           tmp_path: Path) -> AsyncIterator[HostFactory]:
        """Opens hosts (a new one = a restarted host) sharing one data folder and sign-in."""
        key = base64.b64encode(os.urandom(32)).decode()
        home = tmp_path / "host"
        username, password = interapp_home.new_user()
        target, secret = await harness.target()
        shared = await harness.shared_target(interapp_home)

        def factory() -> AbstractAsyncContextManager[Host]:
            return Host.open(home, vault_key=key, call_timeout=30, max_backoff=1.0)

        async with factory() as host:
            await host.set_local(interapp_home.url, client_id=interapp_home.client_id,
                                 client_secret=interapp_home.client_secret)
            await host.sign_in(username, password)
            await host.add_target("t", plugin=target.plugin, server=target.server,
                                  client_id=target.client_id, client_secret=secret,
                                  tls=target.tls, options=target.options)
            if shared is not None:
                st, ssecret = shared
                await host.add_target("shared", plugin=st.plugin, server=st.server,
                                      client_id=st.client_id, client_secret=ssecret,
                                      account_system="shared", tls=st.tls, options=st.options)
        self._home, self._key = home, key
        yield factory

    async def _peer(self, harness: Harness, account: Account) -> Plugin:
        """The other side: the same plug-in, logged in as ``account``."""
        target, secret = await harness.target()
        cls = discover().get(target.plugin).load()
        plugin = cls(TargetConfig(name="peer", plugin=target.plugin, server=target.server,
                                  client_id=target.client_id, client_secret=secret,
                                  tls=target.tls, options=dict(target.options)))
        login = await plugin.login({"username": account.username,
                                    "password": Secret(account.password)})
        await plugin.open(login.credential)
        return plugin

    async def _link(self, host_factory: HostFactory, account: Account) -> None:
        async with host_factory() as host:
            c = await host.connect("t", _answers(account))
            assert c.branch is Branch.PROMPT, c.explain

    # --- the claim-1 branches ------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_first_link_through_the_prompt(self, harness: Harness,
                                                 host_factory: HostFactory) -> None:
        """No link: the prompt's answer is sent, and the link is stored only then."""
        alice = await harness.new_account()
        async with host_factory() as host:
            assert await host.links() == []
            prompter = _answers(alice)
            c = await host.connect("t", prompter)
            assert c.branch is Branch.PROMPT, c.explain
            assert prompter.asked == 1
            [link] = await host.links()
            assert link.state is LinkState.LINKED and link.target == "t"

    @pytest.mark.anyio
    async def test_wrong_password_stores_nothing(self, harness: Harness,
                                                 host_factory: HostFactory) -> None:
        """A refused login stores nothing and says why."""
        alice = await harness.new_account()
        async with host_factory() as host:
            with pytest.raises(LinkError) as refused:
                await host.connect("t", Scripted({"username": alice.username,
                                                  "password": alice.password + "-wrong"}))
            assert refused.value.message and refused.value.target == "t"
            assert await host.links() == []

    @pytest.mark.anyio
    async def test_stored_link_is_reused_without_prompt(self, harness: Harness,
                                                        host_factory: HostFactory) -> None:
        """A restarted host uses the stored link; nobody is asked anything."""
        alice = await harness.new_account()
        await self._link(host_factory, alice)
        async with host_factory() as host:
            c = await host.connect("t")
            assert c.branch is Branch.STORED, c.explain

    @pytest.mark.anyio
    async def test_same_account_login(self, harness: Harness, interapp_home: HomeApp,
                                      host_factory: HostFactory) -> None:
        """Same account system: no prompt, no link."""
        if await harness.shared_target(interapp_home) is None:
            pytest.skip(f"plug-in {harness.plugin} has no same-account login (allowed: the "
                        "scenario applies where the plug-in supports it)")
        async with host_factory() as host:
            c = await host.connect("shared")
            assert c.branch is Branch.SHARED, c.explain
            assert await host.links() == []

    @pytest.mark.anyio
    async def test_changed_credential_reauths_the_same_link(
            self, harness: Harness, host_factory: HostFactory) -> None:
        """Password changed: needs_reauth (saying why), prompt again, the same link is
        repaired."""
        alice = await harness.new_account()
        await self._link(host_factory, alice)
        alice = await harness.change_password(alice)
        async with host_factory() as host:
            [before] = await host.links()
            with pytest.raises(NeedsReauth) as stale:
                await host.connect("t")
            assert stale.value.cause, "the plug-in's reason is passed on"
            link = await host.link("t")
            assert link is not None and link.state is LinkState.NEEDS_REAUTH
            assert link.reason and link.reason != "needs_reauth"
            c = await host.connect("t", _answers(alice))
            assert c.branch is Branch.REAUTH, c.explain
            [after] = await host.links()
            assert after.id == before.id and after.state is LinkState.LINKED
            assert after.last_used is not None, "a repaired link was just used"
            assert before.last_used is None or after.last_used > before.last_used

    # --- what the plug-in obtains -------------------------------------------------------------

    @pytest.mark.anyio
    async def test_buddy_list_shape(self, harness: Harness,
                                    host_factory: HostFactory) -> None:
        """Buddies come back with the contract's fields."""
        alice, bob = await harness.new_account(), await harness.new_account()
        await harness.make_buddies(alice, bob)
        await self._link(host_factory, alice)
        async with host_factory() as host:
            buddies = await host.buddies("t")
            names = [b.username for b in buddies]
            assert bob.seen_as in names, names
            for b in buddies:
                assert b.target == "t"
                assert isinstance(b.display_name, str) and b.display_name
                assert b.presence in tuple(PresenceState)
                assert isinstance(b.status_text, str)

    @pytest.mark.anyio
    async def test_presence_change_is_seen_by_the_other_side(
            self, harness: Harness, host_factory: HostFactory) -> None:
        """alice sets away + status text through the host; bob's side sees it live."""
        alice, bob = await harness.new_account(), await harness.new_account()
        await harness.make_buddies(alice, bob)
        await self._link(host_factory, alice)
        peer = await self._peer(harness, bob)
        status = f"in a match {uuid.uuid4().hex[:6]}"
        try:
            async with host_factory() as host:
                await host.connect("t")
                async with _collect(peer) as seen:
                    await asyncio.sleep(harness.settle)
                    done = await host.set_presence("away", status, targets=["t"])
                    assert done.targets == ("t",), done.errors
                    event = await _wait_for(seen, lambda e: e.type == "presence"
                                            and e.data.get("status_text") == status)
                assert event.data["username"] == alice.seen_as
                assert event.data["state"] == "away"
        finally:
            await peer.close()

    @pytest.mark.anyio
    async def test_message_round_trip_both_ways(self, harness: Harness,
                                                host_factory: HostFactory) -> None:
        """alice → bob through the host, and bob → alice back, live."""
        alice, bob = await harness.new_account(), await harness.new_account()
        await harness.make_buddies(alice, bob)
        await self._link(host_factory, alice)
        peer = await self._peer(harness, bob)
        try:
            async with host_factory() as host:
                await host.connect("t")
                async with host.events() as stream:
                    async with _collect(peer) as seen:
                        await asyncio.sleep(0.5 + harness.settle)
                        sent = await host.send("t", bob.seen_as, "ping from alice")
                        assert sent.body == "ping from alice" and sent.own
                        got = await _wait_for(seen, lambda e: e.type == "message"
                                              and e.data.get("body") == "ping from alice")
                        assert got.data["from"] == alice.seen_as
                    await peer.send(alice.seen_as, "pong from bob", uuid.uuid4().hex)
                    item = await _next_message(stream, lambda m: m.body == "pong from bob")
                    assert item.sender == bob.seen_as and not item.own
        finally:
            await peer.close()

    @pytest.mark.anyio
    async def test_history_is_newest_last_and_pages_back(
            self, harness: Harness, host_factory: HostFactory) -> None:
        """History comes oldest → newest; ``before`` scrolls back to older messages."""
        alice, bob = await harness.new_account(), await harness.new_account()
        await harness.make_buddies(alice, bob)
        await self._link(host_factory, alice)
        peer = await self._peer(harness, bob)
        try:
            for n in range(5):
                await peer.send(alice.seen_as, f"history {n}", f"h{n}-" + uuid.uuid4().hex)
        finally:
            await peer.close()
        await asyncio.sleep(harness.settle)
        async with host_factory() as host:
            newest = await host.history("t", bob.seen_as, limit=3)
            assert [m.body for m in newest] == ["history 2", "history 3", "history 4"]
            older = await host.history("t", bob.seen_as, limit=3, before=newest[0].id)
            assert [m.body for m in older] == ["history 0", "history 1"]
            assert all(m.sender == bob.seen_as and not m.own for m in newest + older)

    @pytest.mark.anyio
    async def test_reconnect_after_server_restart_loses_nothing(
            self, harness: Harness, host_factory: HostFactory) -> None:
        """Messages sent around a server restart arrive once each, in order."""
        alice, bob = await harness.new_account(), await harness.new_account()
        await harness.make_buddies(alice, bob)
        await self._link(host_factory, alice)
        async with host_factory() as host:
            await host.connect("t")
            async with host.events() as stream:
                await asyncio.sleep(0.5 + harness.settle)
                peer = await self._peer(harness, bob)
                try:
                    await peer.send(alice.seen_as, "before restart", uuid.uuid4().hex)
                finally:
                    await peer.close()
                await _next_message(stream, lambda m: m.body == "before restart")
                await harness.restart_server()
                peer = await self._peer(harness, bob)
                try:
                    for n in range(5):
                        await peer.send(alice.seen_as, f"after restart {n}", f"ar-{n}-"
                                        + uuid.uuid4().hex)
                finally:
                    await peer.close()
                bodies: list[str] = []
                while len(bodies) < 5:
                    m = await _next_message(stream, lambda m: m.sender == bob.seen_as)
                    bodies.append(m.body)
                assert bodies == [f"after restart {n}" for n in range(5)]
                await asyncio.sleep(1.0)
                extra = []
                while (event := stream.get_nowait()) is not None:
                    extra.append(event)
                assert not [e for e in extra if isinstance(e, events.MessageReceived)
                            and e.message.sender == bob.seen_as], "duplicates"

    @pytest.mark.anyio
    async def test_unlink_revokes_remotely(self, harness: Harness,
                                           host_factory: HostFactory) -> None:
        """unlink gives the grant back to the target first, then forgets it here."""
        alice = await harness.new_account()
        await self._link(host_factory, alice)
        target, secret = await harness.target()
        spec = discover().get(target.plugin)
        if not spec.supports_revocation:
            pytest.skip(f"plug-in {spec.name} keeps nothing the target can revoke "
                        "(allowed: unlink then only destroys the local credential)")
        credential = await asyncio.to_thread(self._stored_credential)
        async with host_factory() as host:
            done = await host.unlink("t")
            assert done.remote_revoked, done.note
            assert await host.links() == []
        plugin = spec.load()(TargetConfig(name="t", plugin=target.plugin, server=target.server,
                                          client_id=target.client_id, client_secret=secret,
                                          tls=target.tls, options=dict(target.options)))
        try:
            with pytest.raises(InterappError):
                await plugin.open(credential)
        finally:
            await plugin.close()

    def _stored_credential(self) -> Credential:
        """What the vault keeps for the link (the kit looks inside on purpose)."""
        from interapp.vault import Vault

        with Vault.open(self._home / "vault.db", env={"INTERAPP_VAULT_KEY": self._key,
                                                      "INTERAPP_VAULT_KEYRING": "0"}) as vault:
            [link] = vault.list_links()
            return vault.read_credential(link.id, audit=False)


class _collect:
    """Collect a plug-in's live events in the background."""

    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.queue: asyncio.Queue[PluginEvent] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> asyncio.Queue[PluginEvent]:
        async def pump() -> None:
            async for event in self.plugin.events(None):
                await self.queue.put(event)

        self._task = asyncio.create_task(pump())
        await asyncio.sleep(0.5)
        return self.queue

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def _wait_for(queue: asyncio.Queue[PluginEvent], match: Callable[[PluginEvent], bool],
                    limit: float = 20.0) -> PluginEvent:
    async def find() -> PluginEvent:
        while True:
            event = await queue.get()
            if match(event):
                return event

    return await asyncio.wait_for(find(), limit)


async def _next_message(stream: AsyncIterator[events.Event],
                        match: Callable[[Message], bool],
                        limit: float = 30.0) -> Message:
    async def find() -> Message:
        async for event in stream:
            if isinstance(event, events.MessageReceived) and match(event.message):
                return event.message
        raise AssertionError("the event stream ended")

    return await asyncio.wait_for(find(), limit)


__all__ = ["Account", "Harness", "HomeApp", "PluginConformance", "Target"]
