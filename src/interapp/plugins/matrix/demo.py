"""``interapp demo --network matrix``: a local Synapse with alice, bob and a direct room.

:func:`prepare_demo` starts Synapse (through :mod:`interapp.testing.synapse`, from its own
virtual environment, on 127.0.0.1) in ``folder``, registers ``alice`` and ``bob``, and makes them
buddies the way the plug-in does it (``add_buddy`` + ``accept_buddy``: a direct room filed in
both users' ``m.direct``). When Synapse is not installed it raises
:class:`~interapp.errors.ConfigError` saying to run ``make peers``.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interapp.errors import ConfigError
from interapp.plugins.contract import TargetConfig
from interapp.secret import Secret

if TYPE_CHECKING:
    from interapp.testing.synapse import JwtTrust

USERS = (("alice", "Alice"), ("bob", "Bob"))


async def prepare_demo(folder: Path, *, jwt: JwtTrust | None = None) -> dict[str, Any]:
    """Start Synapse in ``folder`` with alice and bob as buddies; returns what a demo needs.

    The result: ``homeserver`` (URL), ``server_name``, ``accounts`` (``{"alice": {"username",
    "password", "user_id", "display_name"}, "bob": …}``), ``room_id`` (their direct room),
    ``log`` (Synapse's log file), ``pid`` and ``stop`` (a callable that stops Synapse by its
    PID). ``jwt`` makes the homeserver trust a local application's issuer (same account system;
    its default audience is the homeserver URL).
    """
    try:
        from interapp.testing.synapse import SynapseServer, SynapseUnavailable
    except ImportError as exc:  # interapp.testing needs the test extra (pytest)
        raise ConfigError(f"the Matrix demo needs interapp's test tools ({exc}); install "
                          "'interapp[test]'") from exc
    from interapp.plugins.matrix.client import MatrixPlugin

    server = SynapseServer(folder / "synapse", jwt=jwt)
    try:
        await asyncio.to_thread(server.start)
    except SynapseUnavailable as exc:
        server.stop()
        raise ConfigError(f"the Matrix demo needs a local Synapse: {exc}") from exc
    try:
        accounts: dict[str, dict[str, str]] = {}
        for name, display in USERS:
            password = secrets.token_urlsafe(12)
            data = await server.aregister(name, password, displayname=display)
            accounts[name] = {"username": name, "password": password,
                              "user_id": str(data["user_id"]), "display_name": display}
        target = TargetConfig(name="matrix", plugin="matrix", server=server.url)
        alice, bob = MatrixPlugin(target), MatrixPlugin(target)
        try:
            for plugin, name in ((alice, "alice"), (bob, "bob")):
                await plugin.login({"username": name,
                                    "password": Secret(accounts[name]["password"])})
            await alice.add_buddy("bob")
            await bob.accept_buddy("alice")
            room_id = await alice._room_with(accounts["bob"]["user_id"])
            for plugin in (alice, bob):  # the demo's own logins are not kept
                await plugin.api.request("POST", "/logout", json_body={})
        finally:
            await alice.close()
            await bob.close()
    except BaseException:
        server.stop()
        raise
    return {"network": "matrix", "homeserver": server.url, "server_name": server.server_name,
            "accounts": accounts, "room_id": room_id, "log": str(server.log_path),
            "pid": server.pid, "stop": server.stop}


__all__ = ["prepare_demo"]
