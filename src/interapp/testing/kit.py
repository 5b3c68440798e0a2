"""The plug-in conformance kit: one fixed set of scenarios every plug-in must pass.

Theory of operation: a plug-in author subclasses :class:`PluginConformance` in a test module and
provides a ``harness`` fixture returning a :class:`Harness` for a *real* server of their network
(account creation, buddies, password change, restart). The kit brings the rest: a real local
application (an interapp server in a thread, the ``interapp_home`` fixture of this pytest
plug-in), a real :class:`~interapp.host.runtime.Host` with its vault in a temporary folder, and
the scenarios — the claim-1 branches, buddy list, presence and messages both ways, history
paging, reconnect
after a server restart with nothing lost or doubled, and unlink revoking remotely. The other
side of every conversation is the same plug-in, logged in as a second account.

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
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from interapp.errors import InterappError, LinkError, PromptUnavailable
from interapp.host.config import LocalApp, Target
from interapp.host.prompts import NoInput, Scripted
from interapp.host.resolver import Branch
from interapp.host.runtime import Host, WatchEvent, target_secret_name
from interapp.plugins.contract import Plugin, PluginEvent, TargetConfig
from interapp.secret import Secret
from interapp.vault import LinkState


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


class PluginConformance:
    """The scenarios. Subclass it and provide the ``harness`` fixture."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        """The kit runs on asyncio."""
        return "asyncio"

    @pytest.fixture
    async def host_factory(self, interapp_home: HomeApp, harness: Harness,
                           tmp_path: Path) -> AsyncIterator[Callable[[], Host]]:
        """Builds hosts (a new one = a restarted host) sharing one data folder and login."""
        env = {"INTERAPP_VAULT_KEY": base64.b64encode(os.urandom(32)).decode(),
               "INTERAPP_VAULT_KEYRING": "0"}
        home = tmp_path / "host"
        home.mkdir()
        username, password = interapp_home.new_user()
        target, secret = await harness.target()
        shared = await harness.shared_target(interapp_home)
        async with Host(home, env=env, call_timeout=30) as host:
            host.set_local(LocalApp(interapp_home.url, interapp_home.client_id,
                                    interapp_home.url), interapp_home.client_secret)
            await host.login(username, Secret(password))
            targets = {"t": Target("t", target.plugin, target.server, target.client_id,
                                   "separate", target.tls, dict(target.options))}
            if secret is not None:
                host.vault.put_secret(target_secret_name("t"), secret)
            if shared is not None:
                st, ssecret = shared
                targets["shared"] = Target("shared", st.plugin, st.server, st.client_id,
                                           "shared", st.tls, dict(st.options))
                if ssecret is not None:
                    host.vault.put_secret(target_secret_name("shared"), ssecret)
            host.config.save_targets(targets)
        yield lambda: Host(home, env=env, call_timeout=30)

    async def _peer(self, harness: Harness, account: Account) -> Plugin:
        """The other side: the same plug-in, logged in as ``account``."""
        target, secret = await harness.target()
        from interapp.host.registry import discover

        cls = discover().get(target.plugin).load()
        plugin = cls(TargetConfig(name="peer", plugin=target.plugin, server=target.server,
                                  client_id=target.client_id, client_secret=secret,
                                  tls=target.tls, options=dict(target.options)))
        login = await plugin.login({"username": account.username,
                                    "password": Secret(account.password)})
        await plugin.open(login.credential)
        return plugin

    async def _link(self, host_factory: Callable[[], Host], account: Account) -> None:
        async with host_factory() as host:
            out = await host.connect("t", _answers(account))
            assert out.failure is None, out.trace
            assert out.connection is not None and out.connection.branch is Branch.PROMPT

    # --- the claim-1 branches ------------------------------------------------------------------

    @pytest.mark.anyio
    async def test_first_link_through_the_prompt(self, harness: Harness,
                                                 host_factory: Callable[[], Host]) -> None:
        """No link: the prompt's answer is sent, and the link is stored only then."""
        alice = await harness.new_account()
        async with host_factory() as host:
            assert host.vault.list_links() == []
            prompter = _answers(alice)
            out = await host.connect("t", prompter)
            assert out.failure is None, out.trace
            assert out.connection is not None and out.connection.branch is Branch.PROMPT
            assert prompter.asked == 1
            [link] = host.vault.list_links()
            assert link.state is LinkState.LINKED and link.target == "t"

    @pytest.mark.anyio
    async def test_wrong_password_stores_nothing(self, harness: Harness,
                                                 host_factory: Callable[[], Host]) -> None:
        """A refused login stores nothing and says why."""
        alice = await harness.new_account()
        async with host_factory() as host:
            out = await host.connect("t", Scripted({"username": alice.username,
                                                    "password": alice.password + "-wrong"}))
            assert out.connection is None and isinstance(out.failure, LinkError)
            assert out.failure.message
            assert host.vault.list_links() == []

    @pytest.mark.anyio
    async def test_stored_link_is_reused_without_prompt(self, harness: Harness,
                                                        host_factory: Callable[[], Host]) -> None:
        """A restarted host uses the stored link; nobody is asked anything."""
        alice = await harness.new_account()
        await self._link(host_factory, alice)
        async with host_factory() as host:
            out = await host.connect("t", NoInput())
            assert out.failure is None, out.trace
            assert out.connection is not None and out.connection.branch is Branch.STORED

    @pytest.mark.anyio
    async def test_same_account_login(self, harness: Harness, interapp_home: HomeApp,
                                      host_factory: Callable[[], Host]) -> None:
        """Same account system: no prompt, no link."""
        if await harness.shared_target(interapp_home) is None:
            pytest.skip(f"plug-in {harness.plugin} has no same-account login (allowed: the "
                        "scenario applies where the plug-in supports it)")
        async with host_factory() as host:
            out = await host.connect("shared", NoInput())
            assert out.failure is None, out.trace
            assert out.connection is not None and out.connection.branch is Branch.SHARED
            assert host.vault.list_links() == []

    @pytest.mark.anyio
    async def test_changed_credential_reauths_the_same_link(
            self, harness: Harness, host_factory: Callable[[], Host]) -> None:
        """Password changed: needs_reauth, prompt again, the same link is repaired."""
        alice = await harness.new_account()
        await self._link(host_factory, alice)
        alice = await harness.change_password(alice)
        async with host_factory() as host:
            [before] = host.vault.list_links()
            out = await host.connect("t", NoInput())
            assert isinstance(out.failure, PromptUnavailable), out.trace
            link = host.vault.get_link_by_id(before.id)
            assert link is not None and link.state is LinkState.NEEDS_REAUTH
            out = await host.connect("t", _answers(alice))
            assert out.failure is None, out.trace
            assert out.connection is not None and out.connection.branch is Branch.REAUTH
            [after] = host.vault.list_links()
            assert after.id == before.id and after.state is LinkState.LINKED

    # --- what the plug-in obtains -------------------------------------------------------------

    @pytest.mark.anyio
    async def test_buddy_list_shape(self, harness: Harness,
                                    host_factory: Callable[[], Host]) -> None:
        """Buddies come back with the contract's fields."""
        alice, bob = await harness.new_account(), await harness.new_account()
        await harness.make_buddies(alice, bob)
        await self._link(host_factory, alice)
        async with host_factory() as host:
            conn = await host.connection("t", NoInput())
            buddies = await conn.plugin.buddies()
            names = [b.username for b in buddies]
            assert bob.seen_as in names, names
            for b in buddies:
                assert isinstance(b.display_name, str) and b.display_name
                assert b.presence in ("online", "away", "busy", "offline")
                assert isinstance(b.status_text, str)

    @pytest.mark.anyio
    async def test_presence_change_is_seen_by_the_other_side(
            self, harness: Harness, host_factory: Callable[[], Host]) -> None:
        """alice sets away + status text through the host; bob's side sees it live."""
        alice, bob = await harness.new_account(), await harness.new_account()
        await harness.make_buddies(alice, bob)
        await self._link(host_factory, alice)
        peer = await self._peer(harness, bob)
        status = f"in a match {uuid.uuid4().hex[:6]}"
        try:
            async with host_factory() as host:
                conn = await host.connection("t", NoInput())
                async with _collect(peer) as seen:
                    await asyncio.sleep(harness.settle)
                    await conn.plugin.set_presence("away", status)
                    event = await _wait_for(seen, lambda e: e.type == "presence"
                                            and e.data.get("status_text") == status)
                assert event.data["username"] == alice.seen_as
                assert event.data["state"] == "away"
        finally:
            await peer.close()

    @pytest.mark.anyio
    async def test_message_round_trip_both_ways(self, harness: Harness,
                                                host_factory: Callable[[], Host]) -> None:
        """alice → bob through the host, and bob → alice back, live."""
        alice, bob = await harness.new_account(), await harness.new_account()
        await harness.make_buddies(alice, bob)
        await self._link(host_factory, alice)
        peer = await self._peer(harness, bob)
        try:
            async with host_factory() as host:
                sink: asyncio.Queue[WatchEvent] = asyncio.Queue()
                task = asyncio.create_task(host.stream("t", NoInput(), sink))
                try:
                    conn = await host.connection("t", NoInput())
                    async with _collect(peer) as seen:
                        await asyncio.sleep(0.5 + harness.settle)
                        await conn.plugin.send(bob.seen_as, "ping from alice", uuid.uuid4().hex)
                        got = await _wait_for(seen, lambda e: e.type == "message"
                                              and e.data.get("body") == "ping from alice")
                        assert got.data["from"] == alice.seen_as
                    await peer.send(alice.seen_as, "pong from bob", uuid.uuid4().hex)
                    item = await _wait_queue(sink, lambda w: w.event.type == "message"
                                             and w.event.data.get("body") == "pong from bob")
                    assert item.event.data["from"] == bob.seen_as
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        finally:
            await peer.close()

    @pytest.mark.anyio
    async def test_history_is_newest_last_and_pages_back(
            self, harness: Harness, host_factory: Callable[[], Host]) -> None:
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
            conn = await host.connection("t", NoInput())
            newest = await conn.plugin.history(bob.seen_as, limit=3)
            assert [m.body for m in newest] == ["history 2", "history 3", "history 4"]
            older = await conn.plugin.history(bob.seen_as, limit=3, before=newest[0].id)
            assert [m.body for m in older] == ["history 0", "history 1"]
            assert all(m.sender == bob.seen_as for m in newest + older)

    @pytest.mark.anyio
    async def test_reconnect_after_server_restart_loses_nothing(
            self, harness: Harness, host_factory: Callable[[], Host]) -> None:
        """Messages sent around a server restart arrive once each, in order."""
        alice, bob = await harness.new_account(), await harness.new_account()
        await harness.make_buddies(alice, bob)
        await self._link(host_factory, alice)
        async with host_factory() as host:
            sink: asyncio.Queue[WatchEvent] = asyncio.Queue()
            task = asyncio.create_task(host.stream("t", NoInput(), sink, max_backoff=1.0))
            try:
                await asyncio.sleep(0.5 + harness.settle)
                peer = await self._peer(harness, bob)
                try:
                    await peer.send(alice.seen_as, "before restart", uuid.uuid4().hex)
                finally:
                    await peer.close()
                await _wait_queue(sink, lambda w: w.event.data.get("body") == "before restart")
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
                    item = await _wait_queue(sink, lambda w: w.event.type == "message"
                                             and w.event.data.get("from") == bob.seen_as)
                    bodies.append(str(item.event.data["body"]))
                assert bodies == [f"after restart {n}" for n in range(5)]
                await asyncio.sleep(1.0)
                extra = [sink.get_nowait() for _ in range(sink.qsize())]
                assert not [w for w in extra if w.event.type == "message"
                            and w.event.data.get("from") == bob.seen_as], "duplicates"
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    @pytest.mark.anyio
    async def test_unlink_revokes_remotely(self, harness: Harness,
                                           host_factory: Callable[[], Host]) -> None:
        """unlink gives the grant back to the target first, then forgets it here."""
        alice = await harness.new_account()
        await self._link(host_factory, alice)
        async with host_factory() as host:
            link = host.vault.list_links()[0]
            credential = host.vault.read_credential(link.id)
            spec = host.registry.get(host.config.target("t").plugin)
            if not spec.supports_revocation:
                pytest.skip(f"plug-in {spec.name} keeps nothing the target can revoke "
                            "(allowed: unlink then only destroys the local credential)")
            revoked, note = await host.unlink("t")
            assert revoked, note
            assert host.vault.list_links() == []
            plugin = spec.load()(host.target_config(host.config.target("t")))
            try:
                with pytest.raises(InterappError):
                    await plugin.open(credential)
            finally:
                await plugin.close()


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


async def _wait_queue(queue: asyncio.Queue[WatchEvent], match: Callable[[WatchEvent], bool],
                      limit: float = 30.0) -> WatchEvent:
    async def find() -> WatchEvent:
        while True:
            item = await queue.get()
            if match(item):
                return item

    return await asyncio.wait_for(find(), limit)


__all__ = ["Account", "Harness", "HomeApp", "PluginConformance"]
