"""interapp's host SDK: add cross-application buddies, presence and chat to your application.

Everything an application needs is importable from here (``__all__``); the modules behind it
are internal. Start with :class:`Host` and ``docs/sdk.md``::

    from interapp.host import Host, Prompter, PromptRequest, events

    async with Host.open(home=None) as host:
        await host.connect("chatter", prompter=my_dialog)
        for buddy in await host.buddies():
            ...
        async for event in host.events():
            ...

Programs whose main loop is not asyncio use :class:`interapp.host.blocking.BlockingHost`.

The names are loaded on first use, so that the light parts of this package (the link
lifecycle and the resolver, which plug-ins and the vault use) import nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from interapp.errors import (
        AccessDenied,
        AccountInPerson,
        AssertionRefused,
        AuthorizationMismatch,
        ConfigError,
        ConnectionLost,
        ExpiredToken,
        InterappError,
        InvalidActivity,
        InvalidGrant,
        InvalidInvite,
        InviteClosed,
        LinkError,
        LinkMismatch,
        LoginRefused,
        NeedsReauth,
        NoLocalApp,
        NotFoundError,
        NotSignedIn,
        PluginCrashed,
        PluginTimeout,
        PromptDeclined,
        PromptUnavailable,
        ServerChanged,
        UnknownAccount,
        UnknownPerson,
        Unsupported,
        VaultTampered,
        WayUnavailable,
    )
    from interapp.host import events
    from interapp.host.facade import Host
    from interapp.host.lifecycle import LinkState
    from interapp.host.model import (
        ActivityResult,
        Buddies,
        Buddy,
        ConnectResult,
        Invite,
        Invites,
        LinkInfo,
        LocalInfo,
        LocalUser,
        Message,
        PresenceResult,
        TargetInfo,
        TargetState,
        UnlinkResult,
    )
    from interapp.host.persons import (
        Contact,
        ContactAccount,
        Contacts,
        PeopleChanged,
        Person,
        PersonAccount,
        PersonHistory,
        PersonSuggestion,
        PersonSuggestions,
    )
    from interapp.host.plugins import PluginInfo, available_plugins
    from interapp.host.prompts import (
        Answers,
        LinkCompletion,
        Messages,
        NoInput,
        OpenUrlRequest,
        Prompter,
        PromptRequest,
        Scripted,
        ShowCodeRequest,
        Terminal,
        has_display,
    )
    from interapp.host.resolver import Branch, PromptReason, WayReason
    from interapp.plugins.contract import InviteState, LinkWay, PromptField
    from interapp.presence import (
        PRESENCE_STATES,
        Activity,
        Join,
        Party,
        PresenceState,
        render_activity,
    )
    from interapp.secret import Secret
    from interapp.vault.model import AuditReport

_ERRORS = ("AssertionRefused", "ConfigError", "ConnectionLost", "InterappError", "LinkError",
           "LinkMismatch", "LoginRefused", "NeedsReauth", "NoLocalApp", "NotFoundError",
           "NotSignedIn", "PluginCrashed", "PluginTimeout", "PromptDeclined",
           "PromptUnavailable", "ServerChanged", "VaultTampered",
           "InvalidActivity", "InvalidInvite", "InviteClosed", "Unsupported",
           "AccessDenied", "AuthorizationMismatch", "ExpiredToken", "InvalidGrant",
           "WayUnavailable", "AccountInPerson", "UnknownAccount", "UnknownPerson")
_PERSONS = ("Contact", "ContactAccount", "Contacts", "PeopleChanged", "Person", "PersonAccount",
            "PersonHistory", "PersonSuggestion", "PersonSuggestions")

_WHERE: dict[str, str] = {
    "Host": "interapp.host.facade",
    "LinkState": "interapp.host.lifecycle",
    **{n: "interapp.host.model" for n in (
        "Buddies", "Buddy", "ConnectResult", "LinkInfo", "LocalInfo", "LocalUser", "Message",
        "PresenceResult", "TargetInfo", "TargetState", "UnlinkResult",
        "ActivityResult", "Invite", "Invites")},
    **{n: "interapp.host.persons" for n in _PERSONS},
    "PluginInfo": "interapp.host.plugins",
    "available_plugins": "interapp.host.plugins",
    **{n: "interapp.host.prompts" for n in (
        "Answers", "NoInput", "Prompter", "PromptRequest", "Scripted", "Terminal",
        "LinkCompletion", "Messages", "OpenUrlRequest", "ShowCodeRequest", "has_display")},
    "Branch": "interapp.host.resolver",
    "PromptReason": "interapp.host.resolver",
    "WayReason": "interapp.host.resolver",
    "PromptField": "interapp.plugins.contract",
    "InviteState": "interapp.plugins.contract",
    **{n: "interapp.presence" for n in ("Activity", "Join", "Party", "render_activity")},
    "LinkWay": "interapp.plugins.contract",
    "PRESENCE_STATES": "interapp.presence",
    "PresenceState": "interapp.presence",
    "Secret": "interapp.secret",
    "AuditReport": "interapp.vault.model",
    **{n: "interapp.errors" for n in _ERRORS},
}

__all__ = [
    "PRESENCE_STATES",
    "AccessDenied",
    "AccountInPerson",
    "Activity",
    "ActivityResult",
    "Answers",
    "AssertionRefused",
    "AuditReport",
    "AuthorizationMismatch",
    "Branch",
    "Buddies",
    "Buddy",
    "ConfigError",
    "ConnectResult",
    "ConnectionLost",
    "Contact",
    "ContactAccount",
    "Contacts",
    "ExpiredToken",
    "Host",
    "InterappError",
    "InvalidActivity",
    "InvalidGrant",
    "InvalidInvite",
    "Invite",
    "InviteClosed",
    "InviteState",
    "Invites",
    "Join",
    "LinkCompletion",
    "LinkError",
    "LinkInfo",
    "LinkMismatch",
    "LinkState",
    "LinkWay",
    "LocalInfo",
    "LocalUser",
    "LoginRefused",
    "Message",
    "Messages",
    "NeedsReauth",
    "NoInput",
    "NoLocalApp",
    "NotFoundError",
    "NotSignedIn",
    "OpenUrlRequest",
    "Party",
    "PeopleChanged",
    "Person",
    "PersonAccount",
    "PersonHistory",
    "PersonSuggestion",
    "PersonSuggestions",
    "PluginCrashed",
    "PluginInfo",
    "PluginTimeout",
    "PresenceResult",
    "PresenceState",
    "PromptDeclined",
    "PromptField",
    "PromptReason",
    "PromptRequest",
    "PromptUnavailable",
    "Prompter",
    "Scripted",
    "Secret",
    "ServerChanged",
    "ShowCodeRequest",
    "TargetInfo",
    "TargetState",
    "Terminal",
    "UnknownAccount",
    "UnknownPerson",
    "UnlinkResult",
    "Unsupported",
    "VaultTampered",
    "WayReason",
    "WayUnavailable",
    "available_plugins",
    "events",
    "has_display",
    "render_activity",
]


def __getattr__(name: str) -> Any:
    if name == "events":
        return importlib.import_module("interapp.host.events")
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'interapp.host' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
