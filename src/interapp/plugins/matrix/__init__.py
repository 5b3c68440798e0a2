"""The ``matrix`` plug-in: Matrix homeservers (Synapse and others) through the client-server API.

This module is what the ``interapp.plugins`` entry point names; it holds only static metadata,
so listing plug-ins never imports httpx or the implementation. See ``docs/matrix.md``.
"""

from __future__ import annotations

from interapp import __version__
from interapp.plugins.contract import PluginSpec, PromptField

PLUGIN = PluginSpec(
    name="matrix",
    version=__version__,
    description="Matrix homeservers (client-server API: password, SSO or JWT login, direct "
                "rooms, presence, /sync events)",
    implementation="interapp.plugins.matrix.client:MatrixPlugin",
    account_fields=(PromptField("username", "Matrix user (localpart or @user:server)"),
                    PromptField("password", "Password", secret=True)),
    supports_refresh=False,
    supports_presence=True,
    supports_history=True,
    supports_assertion=True,
    supports_revocation=True,
    credential_kinds=("matrix_session",),
    activity="structured",
    invites="message",
    link_ways=("browser", "password"),
)
