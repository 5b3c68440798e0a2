"""Roster and presence of the ``xmpp`` plug-in: XMPP ``show`` ↔ interapp presence states,
subscription states, and :class:`RosterMixin` — buddy JIDs, the presence of a buddy, waiting
for the answers to the initial presence, and the handlers of presence, roster pushes and
subscription requests/answers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from slixmpp.jid import JID

from interapp.errors import BadRequest
from interapp.plugins.contract import PresenceState
from interapp.plugins.xmpp.presence import ProbeWait
from interapp.plugins.xmpp.session import XmppSession, bare_jid
from interapp.plugins.xmpp.stanzas import InboxItem

_ON, _AWAY, _BUSY = PresenceState.ONLINE, PresenceState.AWAY, PresenceState.BUSY
_SHOW_TO_STATE: dict[str, PresenceState] = {"": _ON, "chat": _ON, "away": _AWAY, "xa": _AWAY,
                                           "dnd": _BUSY}
STATE_TO_SHOW = {"online": "chat", "away": "away", "busy": "dnd"}
_RANK = {"online": 0, "away": 1, "busy": 2, "offline": 3}


def subscription_state(item: Any, requested: bool) -> str:
    """A roster item's subscription (``none``/``to``/``from``/``both``) plus pending flags."""
    value = str(item["subscription"] or "none")
    if item["pending_out"]:
        value += "+pending_out"
    if requested and not item["from"]:
        value += "+pending_in"
    return value


class RosterMixin(XmppSession):
    """The roster (buddies, subscriptions) and buddies' presence."""

    def _buddy(self, username: str) -> str:
        jid = bare_jid(username, default_domain=JID(self._jid).domain if self._jid else None)
        if jid == self._jid:
            raise BadRequest("that is your own account")
        return jid

    def _presence_of(self, client: Any, jid: str,
                     fallback_status: str = "") -> tuple[PresenceState, str]:
        resources = client.client_roster[jid].resources if client.client_roster.has_jid(
            jid) else {}
        if not resources:
            return PresenceState.OFFLINE, fallback_status
        best = sorted(resources.values(), key=lambda r: (
            -int(r.get("priority") or 0), _RANK[_SHOW_TO_STATE.get(r.get("show") or "", _ON)]))[0]
        return _SHOW_TO_STATE.get(best.get("show") or "", _ON), str(best.get("status") or "")

    def _start_probe_wait(self, client: Any) -> None:
        """Just before the initial presence: the contacts whose presence the server will
        probe (subscription ``to`` or ``both``) are now awaited."""
        subscribed = {jid for jid in self._roster_jids
                      if jid != self._jid and client.client_roster[jid]["to"]}
        self._probe = ProbeWait(subscribed, asyncio.get_running_loop().time())
        self._presence_news = asyncio.Event()

    async def _await_presence(self) -> None:
        """Wait, bounded, until the contacts answered the initial presence's probes (see
        :mod:`~interapp.plugins.xmpp.presence`); at once when they already did."""
        probe = self._probe
        if probe is None:
            return
        loop = asyncio.get_running_loop()
        while not probe.done(loop.time()):
            self._presence_news.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(probe.until() - loop.time(), 0.0)):
                    await self._presence_news.wait()
        if self._probe is probe:
            self._probe = None

    def _on_presence_seen(self, client: Any, pres: Any) -> None:
        who = str(pres["from"].bare)
        if self._probe is not None and who and who != self._jid:
            self._probe.heard(who, asyncio.get_running_loop().time())
            self._presence_news.set()

    def _on_status(self, client: Any, pres: Any) -> None:
        who = str(pres["from"].bare)
        if not who or who == self._jid or pres["type"] == "error":
            return
        state, status = self._presence_of(client, who, str(pres["status"] or ""))
        self._inbox.put_nowait(InboxItem("presence", {"username": who, "state": state,
                                                  "status_text": status,
                                                  "resource": str(pres["from"].resource),
                                                  **self._activity_field(who)}))

    def _activity_field(self, jid: str) -> dict[str, Any]:
        """``{"activity": JSON | null}`` when the buddy's current activity is known, else
        ``{}`` (the rich-presence mixin knows it)."""
        return {}

    def _on_roster(self, client: Any, iq: Any) -> None:
        for jid, item in iq["roster"]["items"].items():
            bare = str(JID(jid).bare)
            if item["subscription"] == "remove":
                self._roster_jids.discard(bare)
            else:
                self._roster_jids.add(bare)

    def _on_subscribe(self, client: Any, pres: Any) -> None:
        who = str(pres["from"].bare)
        item = client.client_roster[who]
        if item["to"] or item["pending_out"] or item["from"]:
            item.authorize()  # we asked them (or already share): the answer is yes
            return
        self._requests.add(who)
        nick = pres.xml.findtext("{http://jabber.org/protocol/nick}nick") or ""
        self._inbox.put_nowait(InboxItem("contact_request", {
            "username": who, "from": who, "display_name": nick or JID(who).user}))

    def _on_subscribed(self, client: Any, pres: Any) -> None:
        who = str(pres["from"].bare)
        self._inbox.put_nowait(InboxItem("contact_added", {"username": who}))

    def _on_unsubscribed(self, client: Any, pres: Any) -> None:
        who = str(pres["from"].bare)
        self._requests.discard(who)
        self._inbox.put_nowait(InboxItem("contact_removed", {"username": who}))
