"""The values the host façade hands out: targets, links, buddies, messages, results.

All are frozen dataclasses with plain fields, so an application can keep, compare and show
them; ``to_dict()`` gives JSON-ready data (what ``--json`` and the agent print).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from interapp.errors import InterappError
from interapp.host.lifecycle import LinkState
from interapp.host.resolver import Branch
from interapp.plugins.contract import Buddy as PluginBuddy
from interapp.plugins.contract import InviteState
from interapp.presence import Activity, PresenceState, iso_utc

__all__ = [
    "ActivityResult", "Buddies", "Buddy", "ConnectResult", "Invite", "Invites", "LinkInfo",
    "LocalInfo", "LocalUser", "Message", "PresenceResult", "TargetInfo", "TargetState",
    "UnlinkResult",
]


def _plain(value: Any) -> Any:
    if isinstance(value, Activity):  # its wire form (the JSON shape)
        return value.to_json()
    if isinstance(value, _Plain):  # its own to_dict (e.g. an event's Invite)
        return value.to_dict()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):  # e.g. an event's Message
        return _plain(asdict(value))
    return value


class _Plain:
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {f.name: _plain(getattr(self, f.name))
                for f in fields(self)}  # type: ignore[arg-type]


class TargetState(StrEnum):
    """Where the host's connection to one target stands."""

    IDLE = "idle"
    """Not connected (nothing asked for it yet, or it was closed)."""
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DEGRADED = "degraded"
    """The target dropped or cannot be reached; the host retries with backoff."""
    NEEDS_REAUTH = "needs_reauth"
    """The stored link is no longer accepted: someone must sign in again (``connect``)."""
    FAILED = "failed"
    """The last connect failed for another reason (``problem`` says which)."""


@dataclass(frozen=True)
class LocalInfo(_Plain):
    """The local application; ``username`` is the local account signed in last
    (:attr:`Host.signed_in` says whether it still is)."""

    server: str
    client_id: str
    issuer: str
    username: str | None


@dataclass(frozen=True)
class LocalUser(_Plain):
    """Who signed in to the local application."""

    username: str
    display_name: str
    issuer: str


@dataclass(frozen=True)
class LinkInfo(_Plain):
    """A stored link of the signed-in user to one target (no secret in here).

    ``server`` is the server the link was made with; ``server_changed`` is True when the
    target's configuration now names another one — the link is then not used at all.
    """

    target: str
    remote_account: str
    remote_account_id: str
    state: LinkState
    reason: str
    server: str
    server_changed: bool
    created_at: datetime
    last_used: datetime | None
    id: str = ""
    """The link's id in the vault (stays the same when the link is repaired)."""


@dataclass(frozen=True)
class TargetInfo(_Plain):
    """A configured target (``targets.toml``) and its connection as this host sees it."""

    name: str
    plugin: str
    server: str
    client_id: str | None
    account_system: str
    tls: bool | None
    options: Mapping[str, str]
    state: TargetState = TargetState.IDLE
    account: str | None = None
    """The remote account connected as (when connected)."""
    branch: Branch | None = None
    """Which branch of the flow connected it (when connected)."""
    problem: str = ""
    """Why the last connect or the event stream failed, in words."""
    problem_code: str = ""


@dataclass(frozen=True)
class ConnectResult(_Plain):
    """A connected target: how (``branch``), as whom, and the resolver's trace (``explain``)."""

    target: str
    branch: Branch
    account: str
    account_id: str
    display_name: str
    link: LinkInfo | None
    explain: str = field(repr=False, default="")
    way: str | None = None
    """How the user signed in (``browser``, ``device``, ``password``); None when no sign-in
    was needed (same account system, stored link)."""
    way_reason: str | None = None
    """Why that way (a :class:`~interapp.host.resolver.WayReason` code: ``requested``,
    ``remembered``, ``headless``, ``most_secure``, ``only_way``)."""


@dataclass(frozen=True)
class UnlinkResult(_Plain):
    """What unlinking did remotely (``remote_revoked``: True, False = failed, None = nothing
    the target could revoke) and locally (the credential is always destroyed)."""

    target: str
    remote_revoked: bool | None
    local_credential_destroyed: bool
    note: str


@dataclass(frozen=True)
class Buddy(_Plain):
    """A buddy on one target, with the presence last seen."""

    target: str
    id: str
    username: str
    display_name: str
    presence: PresenceState = PresenceState.OFFLINE
    status_text: str = ""
    groups: tuple[str, ...] = ()
    subscription: str = "both"
    activity: Activity | None = None
    """What they are doing (rich presence), where the target carries it."""

    @classmethod
    def _of(cls, target: str, b: PluginBuddy, presence: PresenceState) -> Buddy:
        """The host's copy of a plug-in's buddy, made without the frozen ``__init__``.

        A frozen dataclass's ``__init__`` sets each of the nine fields through
        ``object.__setattr__``; copying the plug-in buddy's ``__dict__`` and setting the two
        fields that differ takes a quarter of that, and ``buddies()`` makes one per buddy
        (the façade's overhead on a 100-buddy list, issue 11's ≤ 5 % target). Equal to
        ``Buddy(target, b.id, …)`` in every way (a test checks); a plug-in's own subclass of
        its buddy type, which may carry more attributes, takes the plain way.
        """
        if type(b) is not PluginBuddy:
            return cls(target, b.id, b.username, b.display_name, presence, b.status_text,
                       tuple(b.groups), b.subscription, b.activity)
        data = b.__dict__.copy()
        data["target"] = target
        data["presence"] = presence
        if type(data["groups"]) is not tuple:  # a plug-in that gave a list
            data["groups"] = tuple(data["groups"])
        new = object.__new__(cls)
        object.__setattr__(new, "__dict__", data)
        return new


class Buddies(list[Buddy]):
    """The buddy list across targets (a list), with ``problems``: the targets that could not
    be asked, and why."""

    problems: dict[str, InterappError]

    def __init__(self, buddies: Iterable[Buddy] = (),
                 problems: Mapping[str, InterappError] | None = None) -> None:
        super().__init__(buddies)
        self.problems = dict(problems or {})


@dataclass(frozen=True)
class Message(_Plain):
    """A chat message on one target; ``own`` is True for the signed-in user's own messages."""

    target: str
    id: str
    sender: str
    recipient: str
    body: str
    sent_at: str
    client_msg_id: str | None = None
    own: bool = False


@dataclass(frozen=True)
class PresenceResult(_Plain):
    """Where the presence was set, and where it could not be (``errors``: target → message;
    ``problems``: target → the error itself)."""

    state: PresenceState
    status_text: str
    targets: tuple[str, ...]
    errors: Mapping[str, str]
    problems: Mapping[str, InterappError] = field(default_factory=dict, compare=False,
                                                  repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (without ``problems``)."""
        return {"state": str(self.state), "status_text": self.status_text,
                "targets": list(self.targets), "errors": dict(self.errors)}


@dataclass(frozen=True)
class ActivityResult(_Plain):
    """Where the activity was shown, and how: ``carried`` maps each target to ``native`` /
    ``structured`` (the network's structured form) or ``text`` (only the readable
    :func:`~interapp.presence.render_activity` text in the status, where the network cannot
    carry more); ``errors`` maps the targets that could not be reached to a message."""

    activity: Activity | None
    targets: tuple[str, ...]
    carried: Mapping[str, str]
    errors: Mapping[str, str]
    problems: Mapping[str, InterappError] = field(default_factory=dict, compare=False,
                                                  repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (without ``problems``)."""
        return {"activity": None if self.activity is None else self.activity.to_json(),
                "targets": list(self.targets), "carried": dict(self.carried),
                "errors": dict(self.errors)}


@dataclass(frozen=True)
class Invite(_Plain):
    """An invite on one target: ``from_user`` asks ``to_user`` to join ``activity`` or
    ``join_url``; ``outgoing`` is True when the signed-in user sent it. ``url`` is where to
    join (the link, else the activity's)."""

    target: str
    id: str
    from_user: str
    to_user: str
    activity: Activity | None
    join_url: str | None
    message: str
    created_at: datetime
    expires_at: datetime
    state: InviteState = InviteState.PENDING
    outgoing: bool = False

    @property
    def url(self) -> str | None:
        """Where to join: the invite's own link, else its activity's."""
        if self.join_url:
            return self.join_url
        return self.activity.join.url if self.activity and self.activity.join else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data: the wire form (``from``, ``to`` …) plus ``target``, ``outgoing``
        and ``url``."""
        return {"target": self.target, "id": self.id, "from": self.from_user,
                "to": self.to_user,
                "activity": None if self.activity is None else self.activity.to_json(),
                "join_url": self.join_url, "url": self.url, "message": self.message,
                "created_at": iso_utc(self.created_at), "expires_at": iso_utc(self.expires_at),
                "state": str(self.state), "outgoing": self.outgoing}


class Invites(list[Invite]):
    """Open invites across targets (a list), with ``problems``: the targets that could not
    be asked, and why."""

    problems: dict[str, InterappError]

    def __init__(self, invites: Iterable[Invite] = (),
                 problems: Mapping[str, InterappError] | None = None) -> None:
        super().__init__(invites)
        self.problems = dict(problems or {})
