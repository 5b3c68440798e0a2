"""The ``interapp`` plug-in: talks to interapp application servers.

This module is what the ``interapp.plugins`` entry point names; it holds only static metadata so
that listing plug-ins never imports httpx or websockets.
"""

from __future__ import annotations

from interapp import __version__
from interapp.plugins.contract import PluginSpec, PromptField

PLUGIN = PluginSpec(
    name="interapp",
    version=__version__,
    description="interapp application servers (OAuth 2.0 + /v1 API + WebSocket events)",
    implementation="interapp.plugins.interapp_server.client:InterappPlugin",
    account_fields=(PromptField("username", "Username"),
                    PromptField("password", "Password", secret=True)),
    supports_refresh=True,
    supports_presence=True,
    supports_history=True,
    supports_assertion=True,
    credential_kinds=("oauth_tokens",),
    activity="native",
    invites="native",
    link_ways=("browser", "device", "password"),
)
