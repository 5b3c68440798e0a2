"""Rich presence and invites of the ``matrix`` plug-in as Matrix event content: pure, no I/O.

Activity
--------
* **Readable:** the presence ``status_msg`` is the user's status text and
  :func:`~interapp.presence.render_activity` of the activity (``"brb — Arena · Ranked 2v2 ·
  2/4 · 12 min"``), so every Matrix client shows it.
* **Structured, for other interapp users:** a state event of type :data:`ACTIVITY_EVENT`
  (``org.interapp.activity``) with ``state_key`` = the user's id in each direct room with a
  buddy, content ``{"activity": {Activity JSON} | null}``. Account data would be private to the
  user; room state is what the buddy's client reads (on ``/sync`` and in a room's current
  state). Where the room's power levels refuse the state event (a DM made by another client
  with the ``private_chat`` preset), the same content is sent as a plain timeline event of that
  type, which Matrix clients that do not know it ignore. Only the user's own event counts: a
  state event whose ``state_key`` or sender is someone else is never read as their activity.
* The user's own choice is also kept in the account data :data:`ACTIVITY_EVENT` (for the
  status text the plug-in composes in other processes).

Invites
-------
An ``m.room.message`` (``m.text``) whose ``body`` is the readable fallback with the join link
(:func:`~interapp.presence.render_invite`) and which carries :data:`INVITE_KEY`
(``org.interapp.invite``: the invite's JSON); the answer carries :data:`ANSWER_KEY`
(``org.interapp.invite_answer``: the invite's JSON, state ``accepted``/``declined``) beside a
readable body. Clients that know neither key show the bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from interapp.errors import InvalidActivity, InvalidInvite
from interapp.plugins.contract import Invite
from interapp.presence import MAX_STATUS_TEXT, Activity, render_activity, render_invite

ACTIVITY_EVENT: Final = "org.interapp.activity"
INVITE_KEY: Final = "org.interapp.invite"
ANSWER_KEY: Final = "org.interapp.invite_answer"

__all__ = [
    "ACTIVITY_EVENT", "ANSWER_KEY", "INVITE_KEY", "activity_content", "activity_from_event",
    "answer_content", "invite_content", "invite_of_message", "status_with_activity",
]


def status_with_activity(status: str, activity: Activity | None) -> str:
    """The ``status_msg``: the status text and the readable activity, within the status size."""
    text = render_activity(activity)
    combined = f"{status} — {text}" if status and text else (status or text)
    return combined[:MAX_STATUS_TEXT]


def activity_content(activity: Activity | None) -> dict[str, Any]:
    """The content of an ``org.interapp.activity`` event (``null``: cleared)."""
    return {"activity": None if activity is None else activity.to_json()}


def activity_from_event(event: Mapping[str, Any]) -> tuple[str, Activity | None] | None:
    """(user, activity) from an ``org.interapp.activity`` event, or None when it is not one,
    not the sender's own (a state event about someone else), or malformed."""
    if event.get("type") != ACTIVITY_EVENT:
        return None
    sender = event.get("sender")
    if not isinstance(sender, str) or not sender:
        return None
    if "state_key" in event and event.get("state_key") != sender:
        return None
    content = event.get("content")
    if not isinstance(content, Mapping):
        return None
    if not content:  # a redacted state event: cleared
        return sender, None
    try:
        doc = content.get("activity")
        return sender, None if doc is None else Activity.from_json(doc, strict=False)
    except InvalidActivity:
        return None


def invite_content(invite: Invite) -> dict[str, Any]:
    """The ``m.room.message`` content of an invite: readable body plus the structured form."""
    return {"msgtype": "m.text", "body": render_invite(invite.activity, invite.join_url,
                                                       invite.message),
            INVITE_KEY: invite.to_json()}


def answer_content(invite: Invite, body: str) -> dict[str, Any]:
    """The ``m.room.message`` content of an answer (``invite`` in its answered state)."""
    return {"msgtype": "m.text", "body": body, ANSWER_KEY: invite.to_json()}


def invite_of_message(content: Any) -> tuple[Literal["invite", "answer"], Invite] | None:
    """The invite or answer an ``m.room.message`` content carries (None: none or malformed)."""
    if not isinstance(content, Mapping):
        return None
    kinds: tuple[tuple[Literal["invite", "answer"], str], ...] = (
        ("invite", INVITE_KEY), ("answer", ANSWER_KEY))
    for kind, key in kinds:
        doc = content.get(key)
        if doc is None:
            continue
        try:
            return kind, Invite.from_json(doc, strict=False)
        except (InvalidInvite, InvalidActivity):
            return None
    return None
