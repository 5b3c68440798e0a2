"""``Event.to_dict()`` is JSON-ready all the way down (what the agent and ``--json`` send)."""

from __future__ import annotations

import json

from interapp.host import Branch, Message, events
from interapp.presence import PresenceState


def test_a_message_event_is_plain_json() -> None:
    msg = Message("chatter", "m1", "bob", "alice", "hi", "2026-01-01T00:00:00Z", "c1", False)
    data = events.MessageReceived("chatter", msg, cursor="7", raw={"x": 1}).to_dict()
    assert data == {"type": "message", "target": "chatter", "message": {
        "target": "chatter", "id": "m1", "sender": "bob", "recipient": "alice", "body": "hi",
        "sent_at": "2026-01-01T00:00:00Z", "client_msg_id": "c1", "own": False}}
    assert json.loads(json.dumps(data)) == data  # no default= needed


def test_enums_become_their_values() -> None:
    assert events.BuddyPresence("chatter", "bob", PresenceState.AWAY, "brb").to_dict() == {
        "type": "presence", "target": "chatter", "username": "bob", "state": "away",
        "status_text": "brb", "previous": "offline", "own": False}
    assert events.TargetConnected("chatter", Branch.STORED, "alice").to_dict()["branch"] == \
        "stored-link"


def test_the_hosts_fast_buddy_copy_is_the_same_buddy() -> None:
    """``buddies()`` copies each plug-in buddy with ``Buddy._of`` (no frozen ``__init__``)."""
    import dataclasses

    import pytest

    from interapp.host import Activity, Buddy
    from interapp.host._slot import _presence
    from interapp.plugins.contract import Buddy as PluginBuddy

    b = PluginBuddy(id="7", username="bob", display_name="Bob", presence="away",
                    status_text="brb", groups=["friends"], subscription="to",
                    activity=Activity(name="Arena"))
    fast = Buddy._of("chatter", b, _presence(b.presence))
    slow = Buddy("chatter", "7", "bob", "Bob", PresenceState.AWAY, "brb", ("friends",), "to",
                 Activity(name="Arena"))
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert fast.to_dict() == slow.to_dict()
    assert fast.__dict__ is not b.__dict__ and b.presence == "away"  # a copy: b is unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.username = "eve"  # type: ignore[misc]

    @dataclasses.dataclass(frozen=True)
    class RicherBuddy(PluginBuddy):  # a plug-in's own buddy type, with more to it
        avatar: str = ""

    rich = RicherBuddy(id="7", username="bob", display_name="Bob", presence="away",
                       status_text="brb", groups=("friends",), subscription="to",
                       activity=Activity(name="Arena"), avatar="x.png")
    plain = Buddy._of("chatter", rich, PresenceState.AWAY)
    assert plain == slow and not hasattr(plain, "avatar")
    assert _presence("nonsense") is PresenceState.OFFLINE
    assert _presence(PresenceState.BUSY) is PresenceState.BUSY and _presence("busy") is \
        PresenceState.BUSY


def test_a_listed_buddy_list_is_taken_in_when_read_in_order() -> None:
    """``buddies()`` notes its list on the slot; ``seen``/``activities`` take the lists in,
    oldest first, when next read (and after nine unread lists at the latest)."""
    from typing import Any, cast

    from interapp.host import Activity, Buddy
    from interapp.host._slot import Slot

    def bob(presence: PresenceState, text: str = "", game: str | None = None) -> Buddy:
        return Buddy("chatter", "7", "bob", "Bob", presence, text,
                     activity=Activity(name=game) if game else None)

    carol = Buddy("chatter", "8", "carol", "Carol", PresenceState.BUSY)
    slot = Slot("chatter", cast(Any, None))
    slot.listed([bob(PresenceState.AWAY, "brb"), carol])
    slot.listed([bob(PresenceState.ONLINE, "", "Arena")])  # carol left the list
    assert slot._seen == {}  # nothing done yet
    assert slot.seen == {"bob": (PresenceState.ONLINE, ""), "carol": (PresenceState.BUSY, "")}
    assert slot.activities["bob"] == Activity(name="Arena") and slot.activities["carol"] is None
    slot.seen["bob"] = (PresenceState.OFFLINE, "")  # a presence event
    slot.listed([bob(PresenceState.AWAY)])
    assert slot.seen["bob"] == (PresenceState.AWAY, "")  # the newer list wins
    for i in range(9):
        slot.listed([bob(PresenceState.ONLINE, str(i))])
    assert len(slot._listed) <= 8 and slot._seen["bob"][1] != ""  # taken in, unread
