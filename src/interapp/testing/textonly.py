"""A plug-in for tests of the host's rich-presence fallbacks: an interapp server seen through a
network that carries neither structured activities nor invites (only status text and
messages), the way a plain chat network would.

It is the real ``interapp`` plug-in with the rich-presence methods left at the contract's
defaults (:class:`~interapp.errors.Unsupported`), so the host must fall back to the readable
text: the activity in the status text, an invite as a message with the join link.
"""

from __future__ import annotations

from dataclasses import replace

from interapp.plugins.contract import Plugin, PluginSpec
from interapp.plugins.interapp_server import PLUGIN
from interapp.plugins.interapp_server.client import InterappPlugin

__all__ = ["SPEC", "TextOnlyPlugin"]

SPEC: PluginSpec = replace(PLUGIN, name="textonly",
                           description="interapp servers as a text-only network (tests)",
                           implementation="interapp.testing.textonly:TextOnlyPlugin",
                           activity="text", invites=None)


class TextOnlyPlugin(InterappPlugin):
    """The ``interapp`` plug-in without rich presence (see the module docstring)."""

    spec = SPEC

    # the contract's defaults: Unsupported
    set_activity = Plugin.set_activity
    invite = Plugin.invite
    answer_invite = Plugin.answer_invite
    invites = Plugin.invites
