"""Real peer networks for the demo and the tests: a local Synapse or Prosody with two buddies.

``prepare(network, folder)`` starts the server of ``network`` (``matrix`` or ``xmpp``) in
``folder`` and returns what a demo needs: the server URL (``server``), whether it uses TLS,
two accounts ``alice`` and ``bob`` (``username``, ``password``) who are buddies, and ``stop``.
The faces call this instead of importing a plug-in's own setup code.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from interapp.errors import ConfigError

NETWORKS = ("matrix", "xmpp")


async def prepare(network: str, folder: Path) -> dict[str, Any]:
    """Start ``network``'s server with alice and bob as buddies (see the module docstring)."""
    if network not in NETWORKS:
        raise ConfigError(f"--network must be {' or '.join(NETWORKS)}, not {network!r}")
    module = importlib.import_module(f"interapp.plugins.{network}.demo")
    net: dict[str, Any] = await module.prepare_demo(folder)
    net.setdefault("server", net.get("homeserver"))
    return net
