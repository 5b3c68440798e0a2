"""The typed events of :meth:`interapp.host.Host.events`, merged across targets.

Every event names its ``target``. Events that come from a target's stream carry the
``cursor`` to resume after them (the host saves it; you need not) and ``raw``, the plug-in's
own data, for the curious; events the host makes itself (``TargetDegraded``,
``LinkNeedsReauth`` …) have neither. ``kind`` is a stable name for each class (what the
agent and ``watch --json`` send as ``type``), and ``to_dict()`` gives JSON-ready data.

Your own doings come back marked: a message you sent (from here or another client) arrives
as ``MessageReceived`` with ``own=True``, and your own presence as ``BuddyPresence`` with
``own=True``. Presence repeated without a change is not an event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from interapp.host.model import Invite, Message, _plain
from interapp.host.resolver import Branch
from interapp.presence import Activity, PresenceState

__all__ = [
    "KINDS", "BuddyActivity", "BuddyCameOnline", "BuddyPresence", "ContactAdded",
    "ContactRemoved", "ContactRequest", "CursorReset", "Event", "EventsDropped",
    "InviteAnswered", "InviteReceived", "LinkNeedsReauth", "MessageReceived", "OtherEvent",
    "TargetConnected", "TargetDegraded",
]


@dataclass(frozen=True)
class Event:
    """Base of every event: which target it is about."""

    kind: ClassVar[str] = "event"
    target: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data with ``type`` = :attr:`kind` (``raw`` and ``cursor`` left out)."""
        out: dict[str, Any] = {"type": self.kind}
        for f in fields(self):
            if f.name not in ("raw", "cursor"):
                out[f.name] = _plain(getattr(self, f.name))
        return out


@dataclass(frozen=True)
class _FromStream(Event):
    cursor: str | None = field(default=None, kw_only=True, compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, kw_only=True, compare=False,
                                   repr=False)


@dataclass(frozen=True)
class MessageReceived(_FromStream):
    """A chat message arrived (``message.own``: you sent it)."""

    kind: ClassVar[str] = "message"
    message: Message


@dataclass(frozen=True)
class BuddyPresence(_FromStream):
    """A buddy's presence or status text changed (``own``: it is your own presence)."""

    kind: ClassVar[str] = "presence"
    username: str
    state: PresenceState
    status_text: str = ""
    previous: PresenceState = PresenceState.OFFLINE
    own: bool = False


@dataclass(frozen=True)
class BuddyActivity(_FromStream):
    """A buddy's activity (rich presence) changed; ``None`` when they cleared it (``own``: it
    is your own, set from another device). ``text`` is its readable form."""

    kind: ClassVar[str] = "activity"
    username: str
    activity: Activity | None
    own: bool = False

    @property
    def text(self) -> str:
        """The readable line (``"Arena · Ranked 2v2 · 2/4 · 12 min"``)."""
        from interapp.presence import render_activity

        return render_activity(self.activity)


@dataclass(frozen=True)
class InviteReceived(_FromStream):
    """A buddy invites you to join them (``invite.url``; answer with
    ``host.answer_invite(target, invite.id, accept)``)."""

    kind: ClassVar[str] = "invite"
    invite: Invite


@dataclass(frozen=True)
class InviteAnswered(_FromStream):
    """An invite was accepted, declined or expired (``invite.state``); ``invite.outgoing``
    is True when it is one you sent (the buddy answered)."""

    kind: ClassVar[str] = "invite_answer"
    invite: Invite


@dataclass(frozen=True)
class BuddyCameOnline(_FromStream):
    """A buddy went from offline to any other state (also sent as :class:`BuddyPresence`)."""

    kind: ClassVar[str] = "came_online"
    username: str
    state: PresenceState
    status_text: str = ""


@dataclass(frozen=True)
class ContactRequest(_FromStream):
    """``username`` asks to become your buddy (``host.accept_buddy`` to accept)."""

    kind: ClassVar[str] = "contact_request"
    username: str


@dataclass(frozen=True)
class ContactAdded(_FromStream):
    """``username`` is now a buddy."""

    kind: ClassVar[str] = "contact_added"
    username: str


@dataclass(frozen=True)
class ContactRemoved(_FromStream):
    """``username`` is no longer a buddy."""

    kind: ClassVar[str] = "contact_removed"
    username: str


@dataclass(frozen=True)
class CursorReset(_FromStream):
    """The target no longer knew where this host left off (its data was reset): events in
    between may be missing."""

    kind: ClassVar[str] = "cursor_reset"
    message: str = ""


@dataclass(frozen=True)
class OtherEvent(_FromStream):
    """An event of a type this version of the host does not know (``type``, ``raw``)."""

    kind: ClassVar[str] = "other"
    type: str = ""


@dataclass(frozen=True)
class TargetConnected(Event):
    """The target is connected (again): ``branch`` of the flow, as ``account``."""

    kind: ClassVar[str] = "target_connected"
    branch: Branch
    account: str


@dataclass(frozen=True)
class TargetDegraded(Event):
    """The target dropped or cannot be reached; the host tries again in ``retry_in`` s."""

    kind: ClassVar[str] = "target_degraded"
    reason: str
    retry_in: float


@dataclass(frozen=True)
class LinkNeedsReauth(Event):
    """The stored link to ``account`` is no longer accepted (``reason``: the target's words);
    the target is stopped until someone signs in again (``host.connect``). The other targets
    go on."""

    kind: ClassVar[str] = "link_needs_reauth"
    account: str | None
    reason: str
    code: str = "needs_reauth"


@dataclass(frozen=True)
class EventsDropped(Event):
    """This subscriber fell ``count`` events behind and they were dropped (``target`` is
    ``"*"``): reload what you show."""

    kind: ClassVar[str] = "events_dropped"
    count: int


#: Every event class by its :attr:`~Event.kind`.
KINDS: Mapping[str, type[Event]] = {cls.kind: cls for cls in (
    MessageReceived, BuddyPresence, BuddyCameOnline, ContactRequest, ContactAdded,
    ContactRemoved, CursorReset, OtherEvent, TargetConnected, TargetDegraded, LinkNeedsReauth,
    EventsDropped, BuddyActivity, InviteReceived, InviteAnswered)}
