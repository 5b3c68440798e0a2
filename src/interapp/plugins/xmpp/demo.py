"""A local XMPP network for ``interapp demo --network xmpp`` (and tests).

:func:`prepare_demo` starts a real Prosody on 127.0.0.1 (via
:class:`interapp.testing.prosody.ProsodyServer`) with two accounts, ``alice@localhost`` and
``bob@localhost``, gives them vCard names and makes them buddies through the ``xmpp`` plug-in
itself (a subscription request from alice, accepted by bob). When Prosody is not installed it
raises :class:`~interapp.errors.ConfigError` saying how to install it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from interapp.errors import ConfigError
from interapp.plugins.contract import TargetConfig
from interapp.secret import Secret

BEFRIEND_TIMEOUT = 10.0


async def _until(check: Callable[[], Awaitable[bool]], limit: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} did not happen within {limit:.0f} s")
        await asyncio.sleep(0.05)


async def make_buddies(server_url: str, a: tuple[str, str], b: tuple[str, str], *,
                       names: tuple[str, str] | None = None) -> None:
    """Make accounts ``a`` and ``b`` (``(jid, password)``) mutual buddies on ``server_url``.

    ``a`` sends the subscription request, ``b`` accepts it (and asks back; ``a`` answers
    automatically). ``names`` also publishes vCard full names for them.
    """
    from interapp.plugins.xmpp.client import XmppPlugin

    config = TargetConfig(name="setup", plugin="xmpp", server=server_url)
    pa, pb = XmppPlugin(config), XmppPlugin(config)
    try:
        await pa.login({"username": a[0], "password": Secret(a[1])})
        await pb.login({"username": b[0], "password": Secret(b[1])})
        if names is not None:
            await pa.set_display_name(names[0])
            await pb.set_display_name(names[1])
        await pa.add_buddy(b[0])

        async def requested() -> bool:
            return any(x.username == a[0] and "pending_in" in x.subscription
                       for x in await pb.buddies())

        await _until(requested, BEFRIEND_TIMEOUT, f"{b[0]} seeing {a[0]}'s request")
        await pb.accept_buddy(a[0])

        async def mutual() -> bool:
            ab = {x.username: x.subscription for x in await pa.buddies()}
            ba = {x.username: x.subscription for x in await pb.buddies()}
            return ab.get(b[0]) == "both" and ba.get(a[0]) == "both"

        await _until(mutual, BEFRIEND_TIMEOUT, "the mutual subscription")
    finally:
        await pa.close()
        await pb.close()


async def prepare_demo(folder: Path) -> dict[str, Any]:
    """Start Prosody in ``folder`` with buddies alice and bob; returns what the demo needs.

    The result: ``server`` (``xmpp://127.0.0.1:PORT``), ``domain``, ``accounts``
    (``{"alice": {"username": "alice@localhost", "password": …, "display_name": "Alice"},
    "bob": {…}}``), ``pid`` and ``stop`` (a callable that stops the server by its PID).
    """
    from interapp.testing.prosody import INSTALL_HINT, ProsodyNotInstalled, ProsodyServer

    try:
        server = ProsodyServer(Path(folder) / "prosody")
    except ProsodyNotInstalled as exc:
        raise ConfigError(f"the XMPP demo needs a local Prosody server, which is not "
                          f"installed; {INSTALL_HINT}") from exc
    await asyncio.to_thread(server.start)
    try:
        accounts: dict[str, dict[str, str]] = {}
        for user, name in (("alice", "Alice"), ("bob", "Bob")):
            password = f"{user}-{secrets.token_urlsafe(9)}"
            jid = await asyncio.to_thread(server.register, user, password)
            accounts[user] = {"username": jid, "password": password, "display_name": name}
        await make_buddies(server.url,
                           (accounts["alice"]["username"], accounts["alice"]["password"]),
                           (accounts["bob"]["username"], accounts["bob"]["password"]),
                           names=("Alice", "Bob"))
    except BaseException:
        with contextlib.suppress(Exception):
            server.stop()
        raise
    return {"server": server.url, "domain": server.domain, "accounts": accounts,
            "pid": server.pid, "stop": server.stop, "plugin": "xmpp", "tls": False}


__all__ = ["make_buddies", "prepare_demo"]
