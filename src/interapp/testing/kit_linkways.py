"""The conformance kit's link-way scenarios: browser and device linking, where a plug-in
declares them (see :mod:`interapp.plugins.linkways`).

Mixed into :class:`~interapp.testing.kit.PluginConformance`. What the target offers at run time
(:meth:`~interapp.plugins.contract.Plugin.available_link_ways`) must be among what the plug-in
declares; for every way it offers the kit links an account that way through the public SDK
with a person at a browser (the harness's :meth:`~interapp.testing.kit.Harness.browser`):
denied first (nothing stored), then allowed (stored, with the way; a restarted host uses the
link without asking); for every way it does not offer, ``connect(via=…)`` is refused with
``WayUnavailable`` and nothing is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from interapp.errors import InterappError, WayUnavailable
from interapp.host import Answers, Branch, LinkState, LinkWay, PromptRequest, Scripted
from interapp.host.registry import discover
from interapp.plugins.contract import TargetConfig
from interapp.testing.browser import BrowserUser, FormBrowser

if TYPE_CHECKING:
    from interapp.testing.kit import Account, Harness, HostFactory


class _Everything(BrowserUser):
    """A person who can sign in every way: the browser, a device code, or typing."""

    def __init__(self, browser: FormBrowser, account: Account, *, headless: bool) -> None:
        super().__init__(browser, headless=headless)
        self._typed = Scripted({"username": account.username, "password": account.password})

    async def ask(self, request: PromptRequest) -> Answers | None:
        return await self._typed.ask(request)


async def offered_ways(harness: Harness) -> tuple[LinkWay, ...]:
    """The link ways the harness's target offers now."""
    target, secret = await harness.target()
    plugin = discover().get(target.plugin).load()(TargetConfig(
        name="t", plugin=target.plugin, server=target.server, client_id=target.client_id,
        client_secret=secret, tls=target.tls, options=dict(target.options)))
    try:
        return tuple(await plugin.available_link_ways())
    finally:
        await plugin.close()


class LinkWayScenarios:
    """Browser and device linking scenarios (see the module docstring)."""

    def _person(self, harness: Harness, account: Account, decision: str = "allow"
                ) -> FormBrowser:
        browser = harness.browser(account, decision=decision)
        assert browser is not None, (
            f"plug-in {harness.plugin} offers a browser or device way: its harness must "
            "provide browser(account) for the kit to sign in with")
        return browser

    async def _link_way(self, way: LinkWay, harness: Harness,
                        host_factory: HostFactory) -> None:
        alice = await harness.new_account()
        denied = self._person(harness, alice, "deny")
        try:
            async with host_factory() as host:
                with pytest.raises(InterappError) as refused:
                    await host.connect("t", _Everything(denied, alice, headless=False),
                                       via=str(way))
                assert refused.value.target == "t" and refused.value.message
                assert await host.links() == [], "a denied sign-in stores nothing"
        finally:
            await denied.aclose()
        browser = self._person(harness, alice)
        person = _Everything(browser, alice, headless=way is LinkWay.DEVICE)
        try:
            async with host_factory() as host:
                c = await host.connect("t", person)
                await person.settle()
                assert c.branch is Branch.PROMPT, c.explain
                assert (c.way, c.way_reason) == (str(way), "most_secure" if way is
                                                 LinkWay.BROWSER else "headless"), c.explain
                [link] = await host.links()
                assert link.state is LinkState.LINKED
            async with host_factory() as host:
                again = await host.connect("t")
                assert again.branch is Branch.STORED and again.way is None, again.explain
        finally:
            await browser.aclose()

    @pytest.mark.anyio
    async def test_offered_link_ways_are_declared(self, harness: Harness,
                                                  host_factory: HostFactory) -> None:
        """The target offers only ways the plug-in declares; the others are refused with
        WayUnavailable (nothing stored)."""
        spec = discover().get(harness.plugin)
        offered = await offered_ways(harness)
        assert set(offered) <= set(spec.ways()), (offered, spec.ways())
        assert spec.capabilities()["link_ways"] == [str(w) for w in spec.ways()]
        alice = await harness.new_account()
        browser = FormBrowser(alice.username, alice.password)
        try:
            async with host_factory() as host:
                for way in LinkWay:
                    if way in offered:
                        continue
                    with pytest.raises(WayUnavailable):
                        await host.connect("t", _Everything(browser, alice, headless=False),
                                           via=str(way))
                assert await host.links() == []
        finally:
            await browser.aclose()

    @pytest.mark.anyio
    async def test_browser_link(self, harness: Harness, host_factory: HostFactory) -> None:
        """Browser way (where offered): denied stores nothing; allowed stores the link,
        which a restarted host then uses without asking."""
        if LinkWay.BROWSER not in await offered_ways(harness):
            await self._refused(LinkWay.BROWSER, harness, host_factory)
            return
        await self._link_way(LinkWay.BROWSER, harness, host_factory)

    @pytest.mark.anyio
    async def test_device_link(self, harness: Harness, host_factory: HostFactory) -> None:
        """Device way (where offered), chosen by default on a headless face: as above."""
        if LinkWay.DEVICE not in await offered_ways(harness):
            await self._refused(LinkWay.DEVICE, harness, host_factory)
            return
        await self._link_way(LinkWay.DEVICE, harness, host_factory)

    async def _refused(self, way: LinkWay, harness: Harness,
                       host_factory: HostFactory) -> None:
        alice = await harness.new_account()
        browser = FormBrowser(alice.username, alice.password)
        try:
            async with host_factory() as host:
                with pytest.raises(WayUnavailable):
                    await host.connect("t", _Everything(browser, alice, headless=False),
                                       via=str(way))
                assert await host.links() == []
        finally:
            await browser.aclose()
