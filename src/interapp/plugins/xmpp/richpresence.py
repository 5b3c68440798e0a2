"""Rich presence and invites of the ``xmpp`` plug-in: :class:`RichMixin`.

The XML is in :mod:`~interapp.plugins.xmpp.rich` (see there for the wire format). Here:

* **Own activity.** :meth:`RichMixin.set_activity` asks the server, once per session, whether
  the account has PEP (disco#info on the bare JID: identity ``pubsub``/``pep`` and feature
  ``pubsub#publish``). With PEP it publishes XEP-0108 User Activity with the interapp form
  inside; without (or when the publish is refused) the activity becomes the readable presence
  status text plus an ``urn:interapp:activity:0`` presence extension. Never an error for what
  the network cannot carry.
* **Buddies' activity.** The session's presence carries entity capabilities (XEP-0115) with
  ``http://jabber.org/protocol/activity+notify``, so the server sends the buddies' User
  Activity as PEP notifications (also their last item when the session comes online). A
  presence extension counts where a buddy has no PEP activity. A change becomes an
  ``activity`` event (``username``, ``activity`` JSON or null), ``presence`` events carry the
  current ``activity`` too, and :meth:`buddies` fills ``Buddy.activity`` (asking a buddy's PEP
  node directly when no notification came yet).
* **Invites.** :meth:`RichMixin.invite` sends a chat message (readable body with the join
  link, the invite JSON attached); its id is derived from the sender and the
  ``client_invite_id``, and is the message's origin id, so a retry is the same invite and is
  shown once. A received invite (live or from the archive) becomes an ``invite`` event; its
  ``from``/``to`` are the stanza's real sender and recipient, never what the JSON claims.
  :meth:`RichMixin.answer_invite` sends the answer the same way; the sender's session turns it
  into an ``invite_answer`` event, accepted only from the invitee. Invites the session does not
  know (another process received or sent them) are looked up in the message archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import xml.etree.ElementTree as ET
from typing import Any

from slixmpp.jid import JID
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from interapp.errors import ApiError, ConfigError, RateLimited
from interapp.plugins.contract import Buddy, Invite, TargetConfig
from interapp.plugins.invitebook import InviteBook, answer_body, derive_invite_id, event_data
from interapp.plugins.xmpp.archive import ArchiveMixin
from interapp.plugins.xmpp.rich import (
    NOTIFY,
    NS_PUBSUB,
    NS_PUBSUB_EVENT,
    answer_element,
    interapp_activity_element,
    invite_element,
    items_request_element,
    offers_pep,
    pep_activities,
    presence_activity,
    publish_element,
    pubsub_items_activity,
)
from interapp.plugins.xmpp.roster import RosterMixin
from interapp.plugins.xmpp.session import IQ_TIMEOUT
from interapp.plugins.xmpp.stanzas import NS_CLIENT, Archived, InboxItem
from interapp.presence import Activity, render_activity, render_invite

#: How many of the newest archived messages are read to find an invite this session missed.
RECOVER_LIMIT = 200
#: How long :meth:`RichMixin.buddies` waits at most for buddies' PEP items.
ITEMS_WAIT = 3.0


class RichMixin(RosterMixin, ArchiveMixin):
    """Activities (own and buddies') and invites over XMPP (see the module docstring)."""

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        self._pep: bool | None = None  # the account's server offers PEP (None: not asked yet)
        self._activity: Activity | None = None  # the user's own, as last set
        self._pep_activity: dict[str, Activity | None] = {}  # buddy → from PEP
        self._presence_act: dict[str, Activity | None] = {}  # buddy → from a presence ext
        self._ext_seen: set[str] = set()  # buddies whose presence carried the extension
        self._activity_said: dict[str, Activity | None] = {}  # buddy → last activity event
        self._book = InviteBook(on_sent=lambda: self._inbox.put_nowait(InboxItem("wake")))
        self._recovered = False

    # --- session -------------------------------------------------------------------------------

    async def _rich_session_start(self, client: Any) -> None:
        """Before the initial presence: ask for User Activity notifications (XEP-0163 §4) and
        compute the capabilities hash the presence will carry."""
        self._pep = None
        self._pep_activity, self._presence_act, self._ext_seen = {}, {}, set()
        client.plugin["xep_0030"].add_feature(NOTIFY)
        with contextlib.suppress(Exception):  # no caps: PEP notifications are just missed
            await client.plugin["xep_0115"].update_caps(broadcast=False)

    def _install_rich_handlers(self, client: Any, mine: Any) -> None:
        """The PEP notification handler (registered with the session's other handlers)."""
        client.register_handler(Callback(
            "interapp PEP activity",
            MatchXPath(f"{NS_CLIENT}message/{{{NS_PUBSUB_EVENT}}}event"),
            mine(self._on_pep_event)))

    async def _has_pep(self) -> bool:
        if self._pep is None:
            client = self._require()
            try:
                info = await self._call(client.plugin["xep_0030"].get_info(
                    jid=JID(self._jid), timeout=IQ_TIMEOUT), "service discovery")
                disco = info["disco_info"]
                identities = {(str(i[0]), str(i[1])) for i in disco["identities"]}
                self._pep = offers_pep(identities, set(disco["features"]))
            except ApiError:
                self._pep = False
        return self._pep

    # --- own activity --------------------------------------------------------------------------

    async def set_activity(self, activity: Activity | None) -> None:
        """Publish ``activity`` as User Activity over PEP, else as presence status text."""
        client = self._require()
        was_text = self._activity is not None and not self._pep
        self._activity = activity
        if await self._has_pep():
            iq = client.make_iq_set()
            iq.append(publish_element(activity))
            try:
                await self._call(iq.send(timeout=IQ_TIMEOUT), "activity publish")
            except ApiError as exc:  # refused (policy, quota): carry it as text instead
                if isinstance(exc, RateLimited):
                    raise
                self._pep = False
        if not self._pep or was_text:
            if self._state != "offline":
                self._send_own_presence(client, pshow=self._show, status=self._status,
                                        priority=self._priority)
            await self._round_trip("presence update")

    def _presence_payload(self, status: str) -> tuple[str, list[ET.Element]]:
        if self._activity is None or self._pep:
            return status, []
        text = render_activity(self._activity)
        combined = f"{status} — {text}" if status and text else (status or text)
        return combined[:256], [interapp_activity_element(self._activity)]

    # --- buddies' activity ---------------------------------------------------------------------

    def _activity_of(self, jid: str) -> Activity | None:
        pep = self._pep_activity.get(jid)
        return pep if pep is not None else self._presence_act.get(jid)

    def _activity_field(self, jid: str) -> dict[str, Any]:
        # known once PEP told (a notification or the node's items), or once a presence of the
        # buddy carried the interapp extension (their presences then say it, or its absence)
        if jid not in self._pep_activity and jid not in self._ext_seen:
            return {}
        found = self._activity_of(jid)
        return {"activity": None if found is None else found.to_json()}

    def _announce_activity(self, jid: str) -> None:
        now = self._activity_of(jid)
        if self._activity_said.get(jid) == now:
            return
        self._activity_said[jid] = now
        self._inbox.put_nowait(InboxItem("activity", {
            "username": jid, "id": jid, "activity": None if now is None else now.to_json()}))

    def _on_pep_event(self, client: Any, msg: Any) -> None:
        who = str(JID(msg["from"]).bare) if msg["from"] else ""
        if not who or who == self._jid:
            return
        found = pep_activities(msg.xml)
        if not found:
            return
        self._pep_activity[who] = found[-1].activity
        self._announce_activity(who)

    def _on_status(self, client: Any, pres: Any) -> None:
        who = str(pres["from"].bare)
        if who and who != self._jid and pres["type"] != "error":
            found = presence_activity(pres.xml) if pres["type"] != "unavailable" else None
            self._presence_act[who] = found
            if found is not None:
                self._ext_seen.add(who)
            self._announce_activity(who)
        super()._on_status(client, pres)

    async def _fetch_activities(self, jids: list[str]) -> None:
        """Ask each buddy's PEP node for the current User Activity (no notification yet)."""
        client = self._require()

        async def one(jid: str) -> None:
            iq = client.make_iq_get(ito=jid)
            iq.append(items_request_element())
            try:
                resp = await self._call(iq.send(timeout=IQ_TIMEOUT), "activity request")
            except ApiError:  # no such node (never published) or no PEP there: none
                self._pep_activity.setdefault(jid, None)
                return
            found = pubsub_items_activity(resp.xml.find(f"{{{NS_PUBSUB}}}pubsub"))
            # a notification that arrived meanwhile is newer: it wins
            self._pep_activity.setdefault(jid, found.activity if found is not None else None)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ITEMS_WAIT):
                await asyncio.gather(*(one(j) for j in jids))

    async def _with_activities(self, buddies: list[Buddy]) -> list[Buddy]:
        """``buddies`` with their activity (available buddies only)."""
        unknown = [b.id for b in buddies if b.presence != "offline"
                   and b.id not in self._pep_activity]
        if unknown and await self._has_pep():
            await self._fetch_activities(unknown)
        return [dataclasses.replace(b, activity=self._activity_of(b.id))
                if b.presence != "offline" else b for b in buddies]

    # --- invites -------------------------------------------------------------------------------

    async def invite(self, to: str, *, activity: Activity | None, join_url: str | None,
                     message: str, client_invite_id: str) -> Invite:
        """Send ``to`` an invite: a chat message with the readable body and the invite JSON."""
        self._require()
        jid = self._buddy(to)
        if not client_invite_id:
            raise ConfigError("an invite needs a client_invite_id")
        iid = derive_invite_id("xi-", self._jid, client_invite_id)
        known = self._book.sent.get(iid)
        if known is not None:
            return known
        sent = self._book.new(self._jid, jid, iid, activity=activity, join_url=join_url,
                              message=message)
        await self._deliver(jid, render_invite(activity, join_url, message), iid,
                            (invite_element(sent),))
        self._book.record_sent(sent)
        return sent

    async def answer_invite(self, invite_id: str, accept: bool) -> Invite:
        """Accept or decline a received invite; the sender gets the answer as a message."""
        self._require()
        if invite_id not in self._book.received:
            await self._recover()
        answered = self._book.to_answer(invite_id, accept)
        await self._deliver(answered.from_user, answer_body(answered),
                            f"{invite_id}.{answered.state}", (answer_element(answered),))
        self._book.record_answer(answered)
        return answered

    async def invites(self) -> list[Invite]:
        """The open invites sent to and by the user (the archive is read once per session)."""
        self._require()
        await self._recover()
        return self._book.open()

    async def _recover(self) -> None:
        """Read the newest archived messages for invites and answers this session missed."""
        if self._recovered or not self._mam:
            return
        self._recovered = True
        page, _, _, _ = await self._mam_query(before=True, limit=RECOVER_LIMIT)
        for message in page:
            self._absorb(message)

    def _absorb(self, message: Archived) -> tuple[str, dict[str, Any]] | None:
        """Take in an invite or answer (received or sent by the user); the event, if due."""
        parts = message.rich
        if parts is None:
            return None
        found = self._book.absorb(parts.kind, parts.invite, me=self._jid,
                                  sender=message.sender, recipient=message.recipient)
        if found is None:
            return None
        kind, invite = found
        return kind, event_data(invite, message.sender, {
            "body": message.body, "message_id": message.archive_id or message.stanza_id,
            "sent_at": message.sent_at})

    def _message_event(self, message: Archived) -> tuple[str, dict[str, Any]]:
        found = self._absorb(message)
        return found if found is not None else ("message", message.as_event_data())


__all__ = ["RichMixin"]
