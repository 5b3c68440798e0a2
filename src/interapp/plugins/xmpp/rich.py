"""Rich presence and invites of the ``xmpp`` plug-in, as XML: pure encode/decode, no I/O.

Activity (XEP-0108 User Activity over XEP-0163 PEP)
---------------------------------------------------
Where the account's server offers PEP (its bare JID has the ``pubsub``/``pep`` identity and the
``pubsub#publish`` feature), the activity is published to the PEP node
``http://jabber.org/protocol/activity``, item ``current``::

    <activity xmlns='http://jabber.org/protocol/activity'>
      <relaxing><gaming>
        <activity xmlns='urn:interapp:activity:0'>{"name": "Arena", ...}</activity>
      </gaming></relaxing>
      <text>Arena · Ranked 2v2 · 2/4 · 12 min</text>
    </activity>

Any XEP-0108 client shows "relaxing / gaming" with the readable ``text``; XEP-0108 §2 lets the
specific-activity element carry a child in another namespace, where interapp puts the activity
in its JSON form (:meth:`~interapp.presence.Activity.to_json`), so another interapp user reads
it structured. Clearing publishes an empty ``<activity/>`` (XEP-0108 §3). An activity some other
client published (no interapp child) reads as an activity named by its text (or its category).

Without PEP the plug-in puts the readable text in the presence ``<status>`` and the same
``<activity xmlns='urn:interapp:activity:0'>`` element as a presence extension.

Invites
-------
An invite is a ``chat`` message whose body is the readable fallback
(:func:`~interapp.presence.render_invite`, with the join link) and which carries
``<invite xmlns='urn:interapp:invite:0'>{Invite JSON}</invite>``. The answer is a ``chat``
message with a readable body and ``<answer xmlns='urn:interapp:invite:0'>{Invite JSON with
state accepted|declined}</answer>``. The JSON is bounded (:data:`MAX_JSON`) before it is parsed.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from interapp.errors import InvalidActivity, InvalidInvite
from interapp.plugins.contract import Invite
from interapp.presence import Activity, render_activity

NS_USER_ACTIVITY: Final = "http://jabber.org/protocol/activity"
NS_PUBSUB: Final = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT: Final = "http://jabber.org/protocol/pubsub#event"
NS_ACTIVITY: Final = "urn:interapp:activity:0"
NS_INVITE: Final = "urn:interapp:invite:0"
FEATURE_PUBLISH: Final = f"{NS_PUBSUB}#publish"
#: The disco feature that asks the server for PEP notifications of User Activity (XEP-0163 §4).
NOTIFY: Final = f"{NS_USER_ACTIVITY}+notify"
ITEM_ID: Final = "current"
#: The largest JSON text read from a stanza (an activity or an invite is far smaller).
MAX_JSON: Final = 8192
GENERAL, SPECIFIC = "relaxing", "gaming"


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _json_element(ns: str, name: str, doc: Mapping[str, Any]) -> ET.Element:
    el = ET.Element(_q(ns, name))
    el.text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    return el


def _json_of(el: ET.Element | None) -> Any:
    """The JSON text of ``el`` parsed (None when absent, oversize or not JSON)."""
    if el is None or not el.text or len(el.text) > MAX_JSON:
        return None
    try:
        return json.loads(el.text)
    except ValueError:
        return None


# --- activity ----------------------------------------------------------------------------------


def activity_element(activity: Activity | None) -> ET.Element:
    """The XEP-0108 ``<activity/>`` payload for ``activity`` (empty: cleared)."""
    root = ET.Element(_q(NS_USER_ACTIVITY, "activity"))
    if activity is None:
        return root
    general = ET.SubElement(root, _q(NS_USER_ACTIVITY, GENERAL))
    specific = ET.SubElement(general, _q(NS_USER_ACTIVITY, SPECIFIC))
    specific.append(interapp_activity_element(activity))
    text = render_activity(activity)
    if text:
        ET.SubElement(root, _q(NS_USER_ACTIVITY, "text")).text = text
    return root


def interapp_activity_element(activity: Activity) -> ET.Element:
    """``<activity xmlns='urn:interapp:activity:0'>JSON</activity>``."""
    return _json_element(NS_ACTIVITY, "activity", activity.to_json())


def publish_element(activity: Activity | None) -> ET.Element:
    """The ``<pubsub><publish node=…><item id='current'>…`` of a PEP publish IQ."""
    pubsub = ET.Element(_q(NS_PUBSUB, "pubsub"))
    publish = ET.SubElement(pubsub, _q(NS_PUBSUB, "publish"), node=NS_USER_ACTIVITY)
    item = ET.SubElement(publish, _q(NS_PUBSUB, "item"), id=ITEM_ID)
    item.append(activity_element(activity))
    return pubsub


def items_request_element() -> ET.Element:
    """``<pubsub><items node=… max_items='1'/>`` (a buddy's current activity, XEP-0060 §6.5)."""
    pubsub = ET.Element(_q(NS_PUBSUB, "pubsub"))
    ET.SubElement(pubsub, _q(NS_PUBSUB, "items"), node=NS_USER_ACTIVITY, max_items="1")
    return pubsub


def interapp_activity(el: ET.Element | None) -> Activity | None:
    """The activity in an ``urn:interapp:activity:0`` element anywhere under ``el``.

    Raises :class:`~interapp.errors.InvalidActivity` when one is there but malformed.
    """
    if el is None:
        return None
    found = el if el.tag == _q(NS_ACTIVITY, "activity") else el.find(
        f".//{_q(NS_ACTIVITY, 'activity')}")
    if found is None:
        return None
    doc = _json_of(found)
    if doc is None:
        raise InvalidActivity("the interapp activity element holds no valid JSON")
    return Activity.from_json(doc, strict=False)


@dataclass(frozen=True)
class PepActivity:
    """What a User Activity item said: the activity (None: cleared) and whether it was
    structured (an interapp child) or only XEP-0108's categories and text."""

    activity: Activity | None
    structured: bool


def parse_user_activity(el: ET.Element) -> PepActivity:
    """A XEP-0108 ``<activity/>`` payload → :class:`PepActivity`.

    An interapp child wins; otherwise the text (or the category, ``"relaxing: gaming"``) is the
    activity's name; an element with no category is a cleared activity. Malformed structured
    content falls back to the readable part (a buddy's bad data is never an error here).
    """
    categories = [c for c in el if c.tag.startswith(f"{{{NS_USER_ACTIVITY}}}")
                  and c.tag != _q(NS_USER_ACTIVITY, "text")]
    if not categories:
        return PepActivity(None, False)
    try:
        structured = interapp_activity(el)
    except (InvalidActivity, InvalidInvite):
        structured = None
    if structured is not None:
        return PepActivity(structured, True)
    text = (el.findtext(_q(NS_USER_ACTIVITY, "text")) or "").strip()
    if not text:
        general = categories[0]
        specific = next((c for c in general if c.tag.startswith(f"{{{NS_USER_ACTIVITY}}}")),
                        None)
        text = _local(general.tag) + (f": {_local(specific.tag)}" if specific is not None
                                      else "")
    try:
        return PepActivity(Activity(name=text[:128]), False)
    except InvalidActivity:
        return PepActivity(Activity(name=" ".join(text.split())[:128] or None), False)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2].replace("_", " ")


def pep_activities(message: ET.Element) -> list[PepActivity]:
    """The User Activity items of a PEP notification message, in order (a retraction or an
    item with no payload counts as cleared)."""
    out: list[PepActivity] = []
    event = message.find(_q(NS_PUBSUB_EVENT, "event"))
    if event is None:
        return out
    for items in event.findall(_q(NS_PUBSUB_EVENT, "items")):
        if items.get("node") != NS_USER_ACTIVITY:
            continue
        for child in items:
            if child.tag == _q(NS_PUBSUB_EVENT, "retract"):
                out.append(PepActivity(None, False))
            elif child.tag == _q(NS_PUBSUB_EVENT, "item"):
                payload = child.find(_q(NS_USER_ACTIVITY, "activity"))
                out.append(parse_user_activity(payload) if payload is not None
                           else PepActivity(None, False))
    return out


def pubsub_items_activity(pubsub: ET.Element | None) -> PepActivity | None:
    """The activity in an items-request answer (``<pubsub><items><item>``); None: no item."""
    if pubsub is None:
        return None
    item = pubsub.find(f"{_q(NS_PUBSUB, 'items')}/{_q(NS_PUBSUB, 'item')}")
    if item is None:
        return None
    payload = item.find(_q(NS_USER_ACTIVITY, "activity"))
    return parse_user_activity(payload) if payload is not None else PepActivity(None, False)


def presence_activity(presence: ET.Element) -> Activity | None:
    """The interapp activity a presence carries as an extension (the no-PEP path)."""
    el = presence.find(_q(NS_ACTIVITY, "activity"))
    if el is None:
        return None
    try:
        return interapp_activity(el)
    except InvalidActivity:
        return None


def offers_pep(identities: set[tuple[str, str]], features: set[str]) -> bool:
    """True when the account's disco#info shows a PEP service that can publish."""
    return ("pubsub", "pep") in identities and FEATURE_PUBLISH in features


# --- invites -----------------------------------------------------------------------------------


def invite_element(invite: Invite) -> ET.Element:
    """``<invite xmlns='urn:interapp:invite:0'>Invite JSON</invite>``."""
    return _json_element(NS_INVITE, "invite", invite.to_json())


def answer_element(invite: Invite) -> ET.Element:
    """``<answer xmlns='urn:interapp:invite:0'>Invite JSON (answered)</answer>``."""
    return _json_element(NS_INVITE, "answer", invite.to_json())


@dataclass(frozen=True)
class InviteParts:
    """The interapp invite (or answer) a message carries, as sent (not yet trusted)."""

    kind: Literal["invite", "answer"]
    invite: Invite


def invite_parts(message: ET.Element) -> InviteParts | None:
    """The invite or answer in a message; None when there is none or it is malformed."""
    kinds: tuple[Literal["invite", "answer"], ...] = ("invite", "answer")
    for kind in kinds:
        doc = _json_of(message.find(_q(NS_INVITE, kind)))
        if doc is None:
            continue
        try:
            return InviteParts(kind, Invite.from_json(doc, strict=False))
        except (InvalidInvite, InvalidActivity):
            return None
    return None


__all__ = [
    "FEATURE_PUBLISH", "ITEM_ID", "MAX_JSON", "NOTIFY", "NS_ACTIVITY", "NS_INVITE",
    "NS_PUBSUB", "NS_PUBSUB_EVENT", "NS_USER_ACTIVITY", "InviteParts", "PepActivity",
    "activity_element", "answer_element", "interapp_activity", "interapp_activity_element",
    "invite_element", "invite_parts", "items_request_element", "offers_pep", "parse_user_activity",
    "pep_activities", "presence_activity", "publish_element", "pubsub_items_activity",
]
