"""Pure logic of the ``matrix`` plug-in: direct rooms, ``/sync`` normalization, event cursors.

Direct rooms
------------
A room is *direct* with user P (P is then a buddy) when the user is joined, P is the only other
member who is joined or invited, and either the user's ``m.direct`` account data lists the room
under P, or the room has no name (the classic "1:1 room" rule, which catches DMs created by
clients that never wrote ``m.direct``). Spaces are never direct. An incoming invite is a buddy
request when its ``is_direct`` flag is set or it is such an unnamed two-person room.

Cursors
-------
``/sync``'s ``next_batch`` token is the cursor. One ``/sync`` answer can carry several events, so
the cursor of an event in the *middle* of an answer is ``mx1.`` + base64url(JSON) of the token
the answer was requested with plus what was already delivered from it (the last event id per
room, and keys of invites and presence changes). Resuming from such a cursor asks ``/sync``
again from that token and skips exactly what was delivered; the last event of an answer carries
the plain ``next_batch``. A host that stops anywhere therefore misses nothing and repeats
nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from interapp.plugins.contract import PluginEvent
from interapp.plugins.matrix.rich import ACTIVITY_EVENT, activity_from_event
from interapp.presence import Activity

MEMBER = "m.room.member"
NAME = "m.room.name"
CREATE = "m.room.create"
MESSAGE = "m.room.message"
DIRECT = "m.direct"
#: account data where the plug-in keeps the presence the user chose (read by every device's sync)
PRESENCE_CHOICE = "io.interapp.presence"
CURSOR_PREFIX = "mx1."
STATE_TYPES = [MEMBER, NAME, CREATE, ACTIVITY_EVENT]
#: (room id, the m.room.message event, its normalized message data) → (event type, data): how
#: the plug-in tells an invite or an answer from a plain message
Classify = Callable[[str, Mapping[str, Any], dict[str, Any]], tuple[str, dict[str, Any]]]

#: Matrix presence → the contract's states ("busy" only from servers with MSC3026)
FROM_MATRIX = {"online": "online", "unavailable": "away", "busy": "busy", "offline": "offline"}
#: the contract's states → Matrix presence (Matrix has no "busy" without MSC3026)
TO_MATRIX = {"online": "online", "away": "unavailable", "busy": "unavailable",
             "offline": "offline"}


def sync_filter(timeline_limit: int, nonce: str | None = None) -> str:
    """The inline ``/sync`` filter of the event loop (or of a scan, with limit 0).

    Synapse caches ``/sync`` answers for identical requests (two minutes by default), so a
    scan passes a ``nonce`` (an extra filter field, which filters may carry) to see the
    present rather than a cached past.
    """
    room: dict[str, Any] = {
        "state": {"types": STATE_TYPES, "lazy_load_members": False},
        "timeline": {"limit": timeline_limit, "types": [MESSAGE, MEMBER, NAME, ACTIVITY_EVENT]},
        "ephemeral": {"types": []}, "account_data": {"types": []}}
    doc: dict[str, Any] = {
        "room": room, "account_data": {"types": [DIRECT, PRESENCE_CHOICE, ACTIVITY_EVENT]},
        "presence": {"types": ["m.presence"] if timeline_limit else []}}
    if nonce:
        doc["io.interapp.nonce"] = nonce
    return json.dumps(doc, separators=(",", ":"))


MESSAGES_FILTER = json.dumps({"types": [MESSAGE, MEMBER, NAME]}, separators=(",", ":"))
#: the events a ``limited`` /sync left out that the event loop needs (buddies' activity too)
GAP_FILTER = json.dumps({"types": [MESSAGE, MEMBER, NAME, ACTIVITY_EVENT]},
                        separators=(",", ":"))


def mxid(name: str, server_name: str) -> str:
    """A user id from a localpart or a full MXID."""
    name = name.strip()
    return name if name.startswith("@") else f"@{name}:{server_name}"


def localpart(user_id: str) -> str:
    """``@alice:example.org`` → ``alice``."""
    return user_id[1:].split(":", 1)[0] if user_id.startswith("@") else user_id


@dataclass
class Member:
    """One member's current membership in a room."""

    user_id: str
    membership: str
    displayname: str = ""
    is_direct: bool = False


@dataclass
class Room:
    """What the plug-in needs of a room's state."""

    room_id: str
    members: dict[str, Member] = field(default_factory=dict)
    name: str = ""
    created_ts: int = 0
    is_space: bool = False
    activities: dict[str, Activity | None] = field(default_factory=dict)  # member → theirs

    def apply(self, event: Mapping[str, Any]) -> bool:
        """Apply one state event (member, name, create, a member's activity); True when it
        changed a member's activity."""
        kind, content = event.get("type"), event.get("content") or {}
        if not isinstance(content, Mapping):
            return False
        if kind == ACTIVITY_EVENT:
            return self.set_activity(event)
        if kind == MEMBER and isinstance(event.get("state_key"), str):
            user = str(event["state_key"])
            self.members[user] = Member(user, str(content.get("membership", "leave")),
                                        str(content.get("displayname") or ""),
                                        bool(content.get("is_direct")))
        elif kind == NAME:
            self.name = str(content.get("name") or "")
        elif kind == CREATE:
            self.created_ts = int(event.get("origin_server_ts") or 0)
            self.is_space = content.get("type") == "m.space"
        return False

    def set_activity(self, event: Mapping[str, Any]) -> bool:
        """Take in an ``org.interapp.activity`` event (state or timeline); True on a change."""
        found = activity_from_event(event)
        if found is None:
            return False
        user, activity = found
        if user in self.activities and self.activities[user] == activity:
            return False
        self.activities[user] = activity
        return True

    def others(self, me: str) -> list[Member]:
        """The other members who are joined or invited."""
        return [m for m in self.members.values()
                if m.user_id != me and m.membership in ("join", "invite")]


@dataclass
class DirectRooms:
    """The user's rooms and ``m.direct``, answering "who is this room a DM with?"."""

    me: str
    rooms: dict[str, Room] = field(default_factory=dict)
    m_direct: dict[str, list[str]] = field(default_factory=dict)

    def set_m_direct(self, content: Mapping[str, Any]) -> None:
        """Replace ``m.direct`` from its account-data content."""
        self.m_direct = {str(k): [str(r) for r in v] for k, v in content.items()
                         if isinstance(v, list)}

    def room(self, room_id: str) -> Room:
        """The room (created empty if unknown)."""
        return self.rooms.setdefault(room_id, Room(room_id))

    def listed(self, room_id: str) -> str | None:
        """The user ``m.direct`` files ``room_id`` under, if any."""
        for user, rooms in self.m_direct.items():
            if room_id in rooms:
                return user
        return None

    def partner(self, room_id: str) -> str | None:
        """The buddy ``room_id`` is a direct room with, or None (see the module docstring)."""
        room = self.rooms.get(room_id)
        if room is None or room.is_space:
            return None
        mine = room.members.get(self.me)
        others = room.others(self.me)
        if mine is None or mine.membership != "join" or len(others) != 1:
            return None
        other = others[0].user_id
        listed = self.listed(room_id)
        if listed == other or (listed is None and not room.name):
            return other
        return None

    def direct_rooms(self) -> dict[str, list[str]]:
        """Buddy → their direct rooms, best first (they joined; in m.direct; newest)."""
        out: dict[str, list[tuple[tuple[int, int, int], str]]] = {}
        for room_id, room in self.rooms.items():
            other = self.partner(room_id)
            if other is None:
                continue
            joined = room.members[other].membership == "join"
            rank = (0 if joined else 1, 0 if self.listed(room_id) else 1, -room.created_ts)
            out.setdefault(other, []).append((rank, room_id))
        return {user: [r for _, r in sorted(items)] for user, items in out.items()}

    def room_with(self, user: str) -> str | None:
        """The best direct room with ``user``."""
        rooms = self.direct_rooms().get(user)
        return rooms[0] if rooms else None

    def activity_known(self, user: str) -> tuple[bool, Activity | None]:
        """(known?, ``user``'s activity) as their best direct room's state (or timeline)
        shows it."""
        for room_id in self.direct_rooms().get(user, []):
            room = self.rooms[room_id]
            if user in room.activities:
                return True, room.activities[user]
        return False, None

    def activity_of(self, user: str) -> Activity | None:
        """``user``'s activity (None: none, or not known)."""
        return self.activity_known(user)[1]

    def forget_activities(self) -> None:
        """Forget every member's activity: a stream resuming from an older cursor learns
        them (as changes) from what ``/sync`` says happened since."""
        for room in self.rooms.values():
            room.activities.clear()


def invite_request(room_id: str, invite_state: Iterable[Mapping[str, Any]],
                   me: str) -> dict[str, Any] | None:
    """The normalized ``contact_request`` for a pending invite, if it is a buddy request."""
    room = Room(room_id)
    inviter = ""
    for event in invite_state:
        room.apply(event)
        if event.get("type") == MEMBER and event.get("state_key") == me:
            inviter = str(event.get("sender") or "")
    mine = room.members.get(me)
    if mine is None or mine.membership != "invite" or not inviter or room.is_space:
        return None
    others = room.others(me)
    if not (mine.is_direct or (not room.name and [m.user_id for m in others] == [inviter])):
        return None
    inviter_member = room.members.get(inviter)
    name = inviter_member.displayname if inviter_member else ""
    return {"from": inviter, "id": inviter, "username": inviter,
            "display_name": name or localpart(inviter), "room_id": room_id}


def presence_data(user: str, content: Mapping[str, Any],
                  activity: tuple[bool, Activity | None] = (False, None)) -> dict[str, Any]:
    """The normalized ``presence`` data; ``activity`` (known?, the buddy's activity from room
    state) adds the ``activity`` field when known."""
    data: dict[str, Any] = {
        "username": user, "id": user,
        "state": FROM_MATRIX.get(str(content.get("presence", "offline")), "offline"),
        "status_text": str(content.get("status_msg") or ""),
        "currently_active": bool(content.get("currently_active", False))}
    known, found = activity
    if known:
        data["activity"] = None if found is None else found.to_json()
    return data


def activity_data(user: str, activity: Activity | None) -> dict[str, Any]:
    """The normalized ``activity`` event data."""
    return {"username": user, "id": user,
            "activity": None if activity is None else activity.to_json()}


# --- cursors -----------------------------------------------------------------------------------


@dataclass
class Position:
    """Where an event stream stands: a ``/sync`` token and what was delivered after it."""

    since: str | None
    rooms: dict[str, str] = field(default_factory=dict)  # room → last delivered event id
    keys: set[str] = field(default_factory=set)          # invites and presence delivered

    def encode(self) -> str:
        """The opaque cursor (a plain token when nothing after it was delivered)."""
        if not self.rooms and not self.keys:
            return self.since or ""
        doc = {"s": self.since, "r": self.rooms, "k": sorted(self.keys)}
        raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        return CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str | None) -> Position:
        """Parse a cursor from :meth:`encode` (or a plain ``next_batch``; None = from now)."""
        if not cursor:
            return cls(None)
        if not cursor.startswith(CURSOR_PREFIX):
            return cls(cursor)
        body = cursor[len(CURSOR_PREFIX):]
        try:
            doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            return cls(str(doc["s"]), {str(k): str(v) for k, v in dict(doc["r"]).items()},
                       {str(k) for k in doc["k"]})
        except (ValueError, KeyError, TypeError, binascii.Error):
            return cls(None)  # unreadable: start from now rather than fail forever


@dataclass
class Batch:
    """One ``/sync`` answer, normalized: the events to yield, each with its cursor."""

    events: list[PluginEvent]
    next_batch: str


def _message(room_id: str, event: Mapping[str, Any], me: str, partner: str
             ) -> dict[str, Any] | None:
    content = event.get("content") or {}
    body = content.get("body") if isinstance(content, Mapping) else None
    if not isinstance(body, str):
        return None  # redacted or not a text message
    sender = str(event.get("sender", ""))
    unsigned = event.get("unsigned") or {}
    data: dict[str, Any] = {
        "from": sender, "to": partner if sender == me else me, "body": body,
        "message_id": str(event.get("event_id", "")), "room_id": room_id,
        "msgtype": str(content.get("msgtype", "")),
        "sent_at": _iso(event.get("origin_server_ts"))}
    if isinstance(unsigned, Mapping) and unsigned.get("transaction_id"):
        data["client_msg_id"] = str(unsigned["transaction_id"])
    return data


def _iso(ms: Any) -> str:
    from interapp.plugins.matrix.api import now_iso

    return now_iso(float(ms)) if isinstance(ms, int | float) else now_iso()


def _membership_change(room_id: str, event: Mapping[str, Any], direct: DirectRooms,
                       partner_before: str | None) -> tuple[str, dict[str, Any]] | None:
    content = event.get("content") or {}
    unsigned = event.get("unsigned") or {}
    prev = unsigned.get("prev_content") if isinstance(unsigned, Mapping) else None
    now = content.get("membership") if isinstance(content, Mapping) else None
    before = prev.get("membership") if isinstance(prev, Mapping) else None
    if now == before:
        return None  # a display name or avatar change
    partner = direct.partner(room_id)
    if now == "join" and partner is not None and (
            (event.get("state_key") == partner and before == "invite")
            or event.get("state_key") == direct.me):
        member = direct.rooms[room_id].members[partner]
        return "contact_added", {"contact": {"id": partner, "username": partner,
                                             "display_name": member.displayname
                                             or localpart(partner)}, "room_id": room_id}
    if now in ("leave", "ban") and partner_before is not None and partner is None \
            and event.get("state_key") == partner_before:
        return "contact_removed", {"contact": {"id": partner_before, "username": partner_before,
                                               "display_name": localpart(partner_before)},
                                   "room_id": room_id}
    return None


def normalize(response: Mapping[str, Any], timelines: Mapping[str, list[Mapping[str, Any]]],
              direct: DirectRooms, position: Position, classify: Classify | None = None
              ) -> Batch:
    """Turn one ``/sync`` answer into events (updating ``direct`` as it goes).

    ``timelines`` holds every joined room's complete timeline since ``position.since`` (the
    caller filled any ``limited`` gap). Events already delivered from this token (``position``)
    are skipped; their state changes are still applied.
    """
    next_batch = str(response.get("next_batch", ""))
    rooms_part = response.get("rooms") or {}
    for event in (response.get("account_data") or {}).get("events", []):
        if event.get("type") == DIRECT and isinstance(event.get("content"), Mapping):
            direct.set_m_direct(event["content"])
    pending: list[tuple[str | None, str, str, dict[str, Any]]] = []  # room, key, type, data
    joined = rooms_part.get("join") or {}
    for room_id in sorted(joined):
        room = direct.room(room_id)
        for event in (joined[room_id].get("state") or {}).get("events", []):
            if room.apply(event) and event.get("sender") == direct.partner(room_id):
                key = f"a|{room_id}|{event.get('event_id', '')}"  # not in the timeline
                if key not in position.keys:
                    user = str(event["sender"])
                    pending.append((None, key, "activity",
                                    activity_data(user, room.activities[user])))
        events = timelines.get(room_id, [])
        skip_to = -1
        if room_id in position.rooms:
            ids = [e.get("event_id") for e in events]
            if position.rooms[room_id] in ids:
                skip_to = ids.index(position.rooms[room_id])
        for index, event in enumerate(events):
            partner_before = direct.partner(room_id)
            changed = room.apply(event) if "state_key" in event else (
                event.get("type") == ACTIVITY_EVENT and room.set_activity(event))
            if index <= skip_to:
                continue
            event_id = str(event.get("event_id", ""))
            if event.get("type") == MESSAGE:
                partner = direct.partner(room_id)
                data = _message(room_id, event, direct.me, partner) if partner else None
                if data is not None:
                    kind, data = classify(room_id, event, data) if classify else (
                        "message", data)
                    pending.append((room_id, event_id, kind, data))
            elif event.get("type") == ACTIVITY_EVENT:
                sender = event.get("sender")
                if changed and sender == direct.partner(room_id) and isinstance(sender, str):
                    pending.append((room_id, event_id, "activity",
                                    activity_data(sender, room.activities[sender])))
            elif event.get("type") == MEMBER:
                change = _membership_change(room_id, event, direct, partner_before)
                if change is not None:
                    pending.append((room_id, event_id, *change))
    for room_id in rooms_part.get("leave") or {}:
        direct.rooms.pop(room_id, None)
    invites = rooms_part.get("invite") or {}
    for room_id in sorted(invites):
        state = (invites[room_id].get("invite_state") or {}).get("events", [])
        request = invite_request(room_id, state, direct.me)
        key = f"i|{room_id}"
        if request is not None and key not in position.keys:
            pending.append((None, key, "contact_request", request))
    buddies = set(direct.direct_rooms())
    presence = sorted((response.get("presence") or {}).get("events", []),
                      key=lambda e: str(e.get("sender", "")))
    for event in presence:
        user, content = str(event.get("sender", "")), event.get("content") or {}
        if user == direct.me or user not in buddies or not isinstance(content, Mapping):
            continue
        data = presence_data(user, content, direct.activity_known(user))
        key = f"p|{user}|{data['state']}|{data['status_text']}"
        if key not in position.keys:
            pending.append((None, key, "presence", data))
    out: list[PluginEvent] = []
    done = Position(position.since, dict(position.rooms), set(position.keys))
    for n, (room_id, key, kind, data) in enumerate(pending):
        if room_id is not None:
            done.rooms[room_id] = key
        else:
            done.keys.add(key)
        cursor = next_batch if n == len(pending) - 1 else done.encode()
        out.append(PluginEvent(type=kind, cursor=cursor, data=data))
    return Batch(out, next_batch)
