"""Chat message stanzas of the ``xmpp`` plug-in: XML namespaces, the message record (from the
archive or live), inbox entries, and the identities used to yield each message once."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from slixmpp.jid import JID

from interapp.plugins.xmpp.rich import InviteParts, invite_parts

NS_SID = "{urn:xmpp:sid:0}"
NS_MAM = "{urn:xmpp:mam:2}"
NS_CLIENT = "{jabber:client}"
NS_FORWARD = "{urn:xmpp:forward:0}"
NS_DELAY = "{urn:xmpp:delay}"
NS_FLEX_OFFLINE = "http://jabber.org/protocol/offline"  # XEP-0013 (no braces: a disco name)


def iso_time(stamp: str | None) -> str:
    """An XEP-0082 timestamp (None: now) as an ISO 8601 UTC time."""
    if stamp:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(
                UTC).isoformat()
    return datetime.now(UTC).isoformat()


@dataclass
class Archived:
    """One message, from the archive or live."""

    archive_id: str | None
    sender: str
    recipient: str
    body: str
    stanza_id: str
    origin_id: str | None
    sent_at: str
    rich: InviteParts | None = None  # an interapp invite or answer it carries (not yet trusted)

    def as_event_data(self) -> dict[str, Any]:
        return {"from": self.sender, "to": self.recipient, "body": self.body,
                "message_id": self.archive_id or self.stanza_id,
                "client_msg_id": self.origin_id or self.stanza_id or None,
                "sent_at": self.sent_at}


@dataclass
class InboxItem:
    """An inbox entry: an event to yield, or the news that the connection dropped."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    message: Archived | None = None


def parse_message(xml: Any, me: str) -> Archived | None:
    """A chat message element → :class:`Archived` (None when it carries no text)."""
    body = xml.findtext(f"{NS_CLIENT}body")
    if not body:
        return None
    archive_id = None
    for sid in xml.findall(f"{NS_SID}stanza-id"):
        if sid.get("by") == me:
            archive_id = sid.get("id")
    origin = xml.find(f"{NS_SID}origin-id")
    delay = xml.find(f"{NS_DELAY}delay")
    return Archived(
        archive_id=archive_id, sender=str(JID(xml.get("from") or me).bare),
        recipient=str(JID(xml.get("to") or me).bare), body=body,
        stanza_id=xml.get("id") or "", origin_id=origin.get("id") if origin is not None else None,
        sent_at=iso_time(delay.get("stamp") if delay is not None else None),
        rich=invite_parts(xml))


def dedup_keys(message: Archived) -> list[str]:
    """Identities of a message: its archive id, and sender + origin id (a retried send)."""
    keys = [f"a:{message.archive_id}"] if message.archive_id else []
    if message.origin_id:
        keys.append(f"o:{message.sender}:{message.origin_id}")
    return keys
