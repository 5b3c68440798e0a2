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
