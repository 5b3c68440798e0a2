"""Rich presence and invites in the host: :class:`RichPresence`, the part of
:class:`~interapp.host.Host` that shows an activity, sends, lists and answers invites, and turns
the plug-ins' ``activity``/``invite``/``invite_answer`` events into typed events.

Theory of operation
-------------------
Every network carries an activity as well as it can, as its plug-in declares
(``PluginSpec.activity``): natively, as a structured form beside a readable status, or only as
text. :meth:`RichPresence.set_activity` asks each target's plug-in to show it; a plug-in that
cannot (:class:`~interapp.errors.Unsupported`) gets the readable
:func:`~interapp.presence.render_activity` text as its status instead — never an error. The
host keeps the activity, like the presence, and shows it again on a target that reconnects.

An invite goes as the network's own invite where it has one; otherwise (``Unsupported``) as a
message whose body is the readable :func:`~interapp.presence.render_invite` text with the join
link. Buddies' activities are remembered per target, so a ``presence`` event that repeats the
activity is no :class:`~interapp.host.events.BuddyActivity`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from interapp.errors import ConfigError, InterappError, InvalidInvite, Unsupported
from interapp.host import events as ev
from interapp.host.model import ActivityResult, Invite, Invites
from interapp.plugins.contract import INVITE_TTL, Plugin
from interapp.plugins.contract import Invite as PluginInvite
from interapp.presence import (
    MAX_INVITE_MESSAGE,
    Activity,
    PresenceState,
    activity_from_json,
    check_join_url,
    render_activity,
    render_invite,
)

if TYPE_CHECKING:
    from interapp.host._slot import Slot
    from interapp.host.driver import Connection

__all__ = ["RichPresence", "activity_events", "rich_events"]

T = TypeVar("T")
_UNKNOWN = object()


def _me(slot: Slot) -> set[str]:
    conn = slot.conn
    return {conn.profile.username, conn.profile.id} if conn is not None else set()


def host_invite(target: str, invite: PluginInvite, me: set[str]) -> Invite:
    """A plug-in's invite as the host hands it out (naming its target)."""
    return Invite(target, invite.id, invite.from_user, invite.to_user, invite.activity,
                  invite.join_url, invite.message, invite.created_at, invite.expires_at,
                  invite.state, invite.from_user in me)


def _check_activity(activity: Activity | None) -> Activity | None:
    if activity is not None and not isinstance(activity, Activity):
        raise ConfigError("activity must be an interapp.presence.Activity or None")
    return None if activity is None or activity.is_empty else activity


async def _carry(plugin: Plugin, slot: Slot, activity: Activity | None) -> str:
    """Show ``activity`` on one target as well as it allows; how it was carried."""
    try:
        await plugin.set_activity(activity)
    except Unsupported:  # readable text in the status instead, never an error
        state, text = slot.wanted_presence or (PresenceState.ONLINE, "")
        try:
            await plugin.set_presence(state, render_activity(activity) if activity else text)
        except ConfigError:  # the network has no presence at all: nothing to show it in
            return "none"
        return "text"
    return plugin.spec.activity


class RichPresence:
    """Rich presence and invites: mixed into :class:`~interapp.host.Host`."""

    if TYPE_CHECKING:
        _slots: dict[str, Slot]

        def _slot(self, name: str) -> Slot: ...

        async def _use(self, name: str, work: Callable[[Plugin], Awaitable[T]]) -> T: ...

        async def _across(self, names: list[str] | None,
                          work: Callable[[Plugin], Awaitable[T]]
                          ) -> dict[str, T | InterappError]: ...

    async def set_activity(self, activity: Activity | None, *,
                           targets: list[str] | None = None) -> ActivityResult:
        """Show ``activity`` (``None`` clears it) beside the presence on the named targets, or
        every connected one (None). Each network carries it as well as it can
        (``result.carried``: ``native``, ``structured`` or ``text``); one that cannot carry
        the structure shows :func:`~interapp.presence.render_activity` as its status text.
        The host keeps it: a target that reconnects shows it again."""
        activity = _check_activity(activity)
        names = targets if targets is not None else \
            [n for n, s in sorted(self._slots.items()) if s.conn is not None]
        for name in names:
            self._slot(name).wanted_activity = (activity,)

        async def one(name: str) -> str | InterappError:
            slot = self._slot(name)
            found = await self._across([name], lambda p: _carry(p, slot, activity))
            return found[name]

        results = dict(zip(names, await asyncio.gather(*(one(n) for n in names)),
                           strict=True))
        carried = {n: v for n, v in results.items() if isinstance(v, str)}
        problems = {n: v for n, v in results.items() if isinstance(v, InterappError)}
        return ActivityResult(activity, tuple(carried), carried,
                              {n: v.message for n, v in problems.items()}, problems)

    async def _reapply_activity(self, slot: Slot) -> None:
        """On a (re)connect: show the activity the user set, on this very connection."""
        conn = slot.conn
        if slot.wanted_activity is None or conn is None:
            return
        (activity,) = slot.wanted_activity
        try:
            await slot.supervised(_carry(conn.plugin, slot, activity))
        except InterappError:  # the next set_activity or reconnect tries again
            return

    def activity(self, target: str) -> Activity | None:
        """The activity this host last set on ``target`` (None: none, or never set)."""
        slot = self._slots.get(target)
        return slot.wanted_activity[0] if slot and slot.wanted_activity else None

    async def invite(self, target: str, user: str, *, activity: Activity | None = None,
                     join_url: str | None = None, message: str = "",
                     client_invite_id: str | None = None) -> Invite:
        """Invite buddy ``user`` on ``target`` to join ``activity`` or ``join_url`` (neither:
        the activity you show there). ``client_invite_id`` (default: a new one) makes retries
        safe. Where the network has no invites, they get a message with the readable
        :func:`~interapp.presence.render_invite` text and the join link."""
        if not isinstance(user, str) or not user.strip():
            raise ConfigError("whom to invite?")
        activity = _check_activity(activity)
        if join_url is not None:
            check_join_url(join_url, "join_url", InvalidInvite)
        if not isinstance(message, str) or len(message) > MAX_INVITE_MESSAGE:
            raise InvalidInvite(f"the invite message is longer than {MAX_INVITE_MESSAGE} "
                                f"characters")
        if activity is None and join_url is None:
            activity = self.activity(target)
        cid = client_invite_id or uuid.uuid4().hex

        async def work(plugin: Plugin) -> PluginInvite:
            try:
                return await plugin.invite(user, activity=activity, join_url=join_url,
                                           message=message, client_invite_id=cid)
            except Unsupported:
                if activity is None and join_url is None:
                    raise InvalidInvite("an invite needs an activity or a join link") from None
                sent = await plugin.send(user, render_invite(activity, join_url, message), cid)
                now = datetime.now(UTC)
                return PluginInvite(id=sent.id, from_user=sent.sender, to_user=user,
                                    activity=activity, join_url=join_url, message=message,
                                    created_at=now,
                                    expires_at=now + timedelta(seconds=INVITE_TTL))

        found = await self._use(target, work)
        return host_invite(target, found, _me(self._slot(target)))

    async def invites(self, target: str | None = None) -> Invites:
        """The open invites, sent and received, of one target or of every target (a network
        without invites has none; ``problems`` says which targets could not be asked)."""

        async def work(plugin: Plugin) -> list[PluginInvite]:
            try:
                return await plugin.invites()
            except Unsupported:
                return []

        results = await self._across([target] if target else None, work)
        found: list[Invite] = []
        problems: dict[str, InterappError] = {}
        for name, value in results.items():
            if isinstance(value, InterappError):
                if target is not None:
                    raise value
                problems[name] = value
                continue
            me = _me(self._slot(name))
            found += [host_invite(name, i, me) for i in value]
        found.sort(key=lambda i: (i.created_at, i.target, i.id))
        return Invites(found, problems)

    async def answer_invite(self, target: str, invite_id: str, accept: bool) -> Invite:
        """Accept or decline invite ``invite_id`` on ``target``; the sender is told."""
        if not isinstance(invite_id, str) or not invite_id:
            raise ConfigError("which invite?")
        found = await self._use(target, lambda p: p.answer_invite(invite_id, accept))
        return host_invite(target, found, _me(self._slot(target)))


# --- plug-in events → typed events --------------------------------------------------------------


def activity_events(slot: Slot, username: str, data: Mapping[str, Any], own: bool,
                    meta: dict[str, Any]) -> list[ev.Event]:
    """A :class:`~interapp.host.events.BuddyActivity` when ``data`` (a ``presence`` or
    ``activity`` event) carries an activity that differs from the one last seen."""
    if "activity" not in data:
        return []
    try:
        activity = activity_from_json(data.get("activity"), strict=False)
    except InterappError:  # unreadable: keep what was known
        return []
    if activity is not None and activity.is_empty:
        activity = None
    known = slot.activities.get(username, _UNKNOWN)
    slot.activities[username] = activity
    if known == activity or (known is _UNKNOWN and activity is None):
        return []
    return [ev.BuddyActivity(slot.name, username, activity, own, **meta)]


def rich_events(slot: Slot, conn: Connection, kind: str, data: Mapping[str, Any],
                meta: dict[str, Any]) -> list[ev.Event] | None:
    """The typed events of an ``activity``, ``invite`` or ``invite_answer`` event (None for
    any other kind)."""
    me = {conn.profile.username, conn.profile.id}
    if kind == "activity":
        username = str(data.get("username", ""))
        return activity_events(slot, username, data, username in me, meta)
    if kind not in ("invite", "invite_answer"):
        return None
    body = data.get("invite")
    try:
        invite = PluginInvite.from_json(body if isinstance(body, Mapping) else data,
                                        strict=False)
    except InterappError:
        return [ev.OtherEvent(slot.name, kind, **meta)]
    found = host_invite(slot.name, invite, me)
    if kind == "invite":
        # your own invite, seen by your other devices, is not one you received
        return [] if found.outgoing else [ev.InviteReceived(slot.name, found, **meta)]
    return [ev.InviteAnswered(slot.name, found, **meta)]
