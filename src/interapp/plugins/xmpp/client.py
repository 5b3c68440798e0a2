"""The ``xmpp`` plug-in's implementation (slixmpp, inside the host's asyncio loop).

Theory of operation
-------------------
One :class:`XmppPlugin` holds at most one XMPP session (a ``slixmpp.ClientXMPP`` built inside
the running loop, resource ``interapp-XXXXXXXX``). :meth:`XmppPlugin.login` authenticates with
the typed password, :meth:`XmppPlugin.open` with the stored credential; both leave the session
running: roster fetched, archive position taken, vCard read, initial presence sent.

**Presence and priority** (:mod:`~interapp.plugins.xmpp.presence`). The initial presence has a
negative priority: the server then delivers no message for the bare JID to this session and
flushes no offline message to it, so a one-shot command takes nothing the user's other clients
rely on. :meth:`XmppPlugin.buddies` on a fresh session first waits, under a second, for the
answers to the initial presence's probes. :meth:`XmppPlugin.events` first raises the priority
to 0 (after the XEP-0013 count request where offered, which keeps ejabberd's offline store), and
yields a buddy's presence only when it changed — across the host's reconnects too.

**Credential.** SASL SCRAM is required whenever the server offers it. After the first login the
link keeps ``xmpp_scram`` = the mechanism, salt, iteration count, ``ClientKey`` and
``ServerKey`` (RFC 5802), never the password: :mod:`interapp.plugins.xmpp.sasl` teaches
slixmpp's SCRAM to log in with those keys and to check the server's signature with them. Only
where a server offers no SCRAM at all does the link keep ``xmpp_password`` (the password; the
vault encrypts every credential), used with SASL PLAIN — on an unencrypted stream only to a
loopback server. A password change gives the account a new salt: the stored keys are then
refused (or recognised as stale before a proof is sent) and the plug-in raises
:class:`~interapp.errors.NeedsReauth`.

**Events and the cursor.** Everything the session receives (chat messages, buddy presence,
subscription changes) goes into an inbox from the moment the session starts. The cursor is a
position in the user's message archive (XEP-0313 MAM): the archive id (XEP-0359 ``stanza-id``
stamped by the server) of the last message event yielded; ``^`` is the start of an empty
archive. Before sending its initial presence the session asks the archive for its newest id —
that is where ``events(None)`` starts, and the query also tells the server that this client
reads the archive, so it does not replay offline messages as live ones (they are in the
archive). ``events(cursor)`` first pages through the archive *after* the cursor, then drains
the inbox; every message is yielded once, by archive id (and by sender + XEP-0359 origin id, so
a retried send is not shown twice). A server restart therefore loses and doubles nothing:
whatever arrived while the link was down is read from the archive after the saved cursor.

**Failures.** A SASL failure is :class:`~interapp.errors.NeedsReauth`; an unreachable or
dropped server (also a request left unanswered) is :class:`~interapp.errors.ConnectionLost`;
a ``wait`` error such as ``resource-constraint``/``policy-violation`` (rate limits) or a SASL
``temporary-auth-failure`` is :class:`~interapp.errors.RateLimited` with ``retry_after`` taken
from the server's text when it gives a number of seconds.

Layout: :mod:`~interapp.plugins.xmpp.session` (connection, SASL policy, error mapping),
:mod:`~interapp.plugins.xmpp.archive` (messages, MAM queries, catch-up),
:mod:`~interapp.plugins.xmpp.roster` (roster, presence, subscriptions) and
:mod:`~interapp.plugins.xmpp.stanzas` (message parsing); :class:`XmppPlugin` here combines them
and implements the plug-in contract.
"""

from __future__ import annotations

import asyncio
import contextlib
from base64 import b64decode
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from slixmpp.jid import JID
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from interapp.errors import (
    ApiError,
    ApiNotFound,
    ConfigError,
    ConnectionLost,
    InterappError,
    NeedsReauth,
    RateLimited,
)
from interapp.plugins.contract import (
    Buddy,
    ChatMessage,
    Credential,
    Login,
    PluginEvent,
    PresenceState,
    Profile,
)
from interapp.plugins.invitebook import expired_data
from interapp.plugins.xmpp import PLUGIN
from interapp.plugins.xmpp.archive import CURSOR_START, MAM_PAGE, ArchiveMixin
from interapp.plugins.xmpp.presence import LIVE_PRIORITY, hand_over, take_over
from interapp.plugins.xmpp.richpresence import RichMixin
from interapp.plugins.xmpp.roster import STATE_TO_SHOW, RosterMixin, subscription_state
from interapp.plugins.xmpp.sasl import ScramKeys, StoredKeySCRAM
from interapp.plugins.xmpp.session import (
    IQ_TIMEOUT,
    bare_jid,
    parse_server,
    retry_after_of,
    stanza_error,
)
from interapp.plugins.xmpp.stanzas import (
    NS_CLIENT,
    NS_FLEX_OFFLINE,
    NS_MAM,
    Archived,
    InboxItem,
    dedup_keys,
)
from interapp.secret import Secret

SCRAM_KIND = "xmpp_scram"
PASSWORD_KIND = "xmpp_password"
KEEPALIVE = 60.0  # seconds of silence on the event stream before a ping


class XmppPlugin(RichMixin, RosterMixin, ArchiveMixin):
    """Connects the local application to an XMPP server (see the module docstring)."""

    spec = PLUGIN

    # --- handlers ------------------------------------------------------------------------------

    def _install_handlers(self, client: Any) -> None:
        def mine(handler: Any) -> Any:
            def wrapped(stanza: Any) -> None:
                if client is self._client and self._lost is None:
                    handler(client, stanza)
            return wrapped

        client.add_event_handler("message", mine(self._on_message))
        client.add_event_handler("message_error", mine(self._on_message_error))
        client.add_event_handler("presence", mine(self._on_presence_seen))
        client.add_event_handler("changed_status", mine(self._on_status))
        client.add_event_handler("roster_update", mine(self._on_roster))
        client.add_event_handler("roster_subscription_request", mine(self._on_subscribe))
        client.add_event_handler("roster_subscription_authorized", mine(self._on_subscribed))
        client.add_event_handler("roster_subscription_removed", mine(self._on_unsubscribed))
        self._install_rich_handlers(client, mine)
        client.register_handler(Callback(
            "interapp MAM result", MatchXPath(f"{NS_CLIENT}message/{NS_MAM}result"),
            lambda msg: self._on_mam_result(client, msg)))

    # --- session start ---------------------------------------------------------------------

    async def _start_session(self) -> Profile:
        client = self._require()
        await self._call(client.get_roster(timeout=IQ_TIMEOUT), "roster request")
        try:  # where events(None) starts; also stops the server replaying offline messages
            _, _, _, last = await self._mam_query(before=True, limit=1)
            self._mam = True
            self._start_cursor = last or CURSOR_START
        except (ApiError, ConfigError):
            self._mam, self._start_cursor = False, ""
        self._cursor = self._start_cursor
        name = await self._vcard_name(self._jid)
        self._state, self._status, self._show = PresenceState.ONLINE, "", None
        inherited = take_over(self._handover_key())
        if inherited is not None:
            self._announced, self._inherited = inherited, True
        await self._rich_session_start(client)
        self._start_probe_wait(client)
        self._send_own_presence(client, priority=self._priority)
        return Profile(id=self._jid, username=self._jid,
                       display_name=name or JID(self._jid).user, presence=self._state,
                       status_text=self._status)

    async def _vcard_name(self, jid: str) -> str:
        client = self._require()
        iq = client.make_iq_get(ito=jid)
        iq.enable("vcard_temp")
        try:
            resp = await self._call(iq.send(timeout=IQ_TIMEOUT), "vCard request")
        except ApiError:
            return ""
        vcard = resp["vcard_temp"]
        return str(vcard["FN"] or vcard["NICKNAME"] or "").strip()

    async def set_display_name(self, name: str) -> None:
        """Publish ``name`` as the vCard's full name (XEP-0054); not part of the contract."""
        client = self._require()
        vcard = client.plugin["xep_0054"].make_vcard()
        vcard["FN"] = name
        vcard["NICKNAME"] = name
        iq = client.make_iq_set()
        iq.append(vcard)
        await self._call(iq.send(timeout=IQ_TIMEOUT), "vCard update")

    # --- the contract ----------------------------------------------------------------------

    async def login(self, answers: Mapping[str, Secret | str]) -> Login:
        """SASL SCRAM with the typed password; keeps the SCRAM keys, not the password."""
        username = answers.get("username")
        password = answers.get("password")
        name = username.reveal() if isinstance(username, Secret) else username
        secret = password.reveal() if isinstance(password, Secret) else password
        if not name or not secret:
            raise ConfigError("an XMPP account (user@domain) and its password are required")
        try:
            jid = bare_jid(name)
        except ConfigError as exc:  # the typed account is wrong: ask again
            raise NeedsReauth(exc.message) from exc
        client = await self._connect(jid, password=secret)
        mech = client.plugin["feature_mechanisms"].mech
        if isinstance(mech, StoredKeySCRAM) and mech.derived is not None:
            keys = mech.derived
            credential = Credential(kind=SCRAM_KIND, fields={
                "jid": self._jid, "mechanism": keys.mechanism, **keys.as_credentials()})
        else:  # the server offered no SCRAM: keep the password (the vault encrypts it)
            credential = Credential(kind=PASSWORD_KIND, fields={"jid": self._jid,
                                                                "password": secret})
        client.password = ""  # the session needs it no more
        profile = await self._start_session()
        return Login(profile.id, profile.username, credential)

    async def open(self, credential: Credential) -> Profile:
        """Log in with the stored SCRAM keys (or stored password); start the session."""
        jid = credential.get("jid") or ""
        if credential.kind == SCRAM_KIND:
            try:
                keys = ScramKeys(
                    mechanism=credential.get("mechanism") or "SCRAM-SHA-1",
                    salt=_b64(credential.get("scram_salt")),
                    iterations=int(credential.get("scram_iterations") or "0"),
                    client_key=_b64(credential.get("scram_client_key")),
                    server_key=_b64(credential.get("scram_server_key")))
            except ValueError as exc:
                raise NeedsReauth("the stored XMPP credential is damaged; log in again") \
                    from exc
            await self._connect(bare_jid(jid), keys=keys)
        elif credential.kind == PASSWORD_KIND:
            client = await self._connect(bare_jid(jid), password=credential.get("password")
                                         or "")
            client.password = ""
        else:
            raise NeedsReauth(f"credential kind {credential.kind!r} is not an XMPP credential")
        return await self._start_session()

    async def buddies(self) -> list[Buddy]:
        """The roster (names, groups, subscription state, presence, activity) and pending
        requests.

        On a fresh session this first waits (under a second) for the server to relay the
        buddies' presence: the answers to the probes of the initial presence.
        """
        self._require()
        await self._await_presence()
        client = self._require()
        out: list[Buddy] = []
        for jid in sorted(self._roster_jids | self._requests):
            if jid == self._jid:
                continue
            item = client.client_roster[jid]
            state, status = self._presence_of(client, jid)
            out.append(Buddy(id=jid, username=jid,
                             display_name=str(item["name"] or "") or JID(jid).user or jid,
                             presence=state, status_text=status,
                             groups=tuple(sorted(str(g) for g in item["groups"])),
                             subscription=subscription_state(item, jid in self._requests)))
        return await self._with_activities(out)

    async def add_buddy(self, username: str) -> None:
        """Put ``username`` on the roster and send a subscription request."""
        client = self._require()
        jid = self._buddy(username)
        if jid not in self._roster_jids:
            await self._call(client.update_roster(jid, timeout=IQ_TIMEOUT), "roster update")
        item = client.client_roster[jid]
        if not item["to"]:
            client.send_presence_subscription(pto=jid, ptype="subscribe")
        if jid in self._requests and not item["from"]:
            self._requests.discard(jid)
            item.authorize()
        await self._round_trip(f"subscription request to {jid}")

    async def accept_buddy(self, username: str) -> None:
        """Authorize ``username``'s subscription and ask for theirs (mutual buddies)."""
        client = self._require()
        jid = self._buddy(username)
        item = client.client_roster[jid]
        client.send_presence(pto=jid, ptype="subscribed")
        self._requests.discard(jid)
        if not item["to"] and not item["pending_out"]:
            client.send_presence_subscription(pto=jid, ptype="subscribe")
        await self._round_trip(f"accepting {jid}")

    async def remove_buddy(self, username: str) -> None:
        """Remove ``username`` from the roster (this cancels both subscriptions), or decline
        their pending request."""
        client = self._require()
        jid = self._buddy(username)
        if jid not in self._roster_jids:
            if jid not in self._requests:
                raise ApiNotFound(f"{jid} is neither a buddy nor asking to be one")
            self._requests.discard(jid)
            client.send_presence(pto=jid, ptype="unsubscribed")
            await self._round_trip(f"declining {jid}")
            return
        self._requests.discard(jid)
        await self._call(client.update_roster(jid, subscription="remove", timeout=IQ_TIMEOUT),
                         "roster removal")

    async def send(self, to: str, body: str, client_msg_id: str) -> ChatMessage:
        """A chat message whose stanza id and origin id are ``client_msg_id``."""
        self._require()
        jid = self._buddy(to)
        await self._deliver(jid, body, client_msg_id)
        return ChatMessage(id=client_msg_id, sender=self._jid, recipient=jid, body=body,
                           sent_at=datetime.now(UTC).isoformat(), client_msg_id=client_msg_id)

    async def history(self, with_user: str, *, limit: int = 50,
                      before: str | None = None) -> list[ChatMessage]:
        """The newest ``limit`` messages with ``with_user`` from the archive, newest last.

        ``before`` (an archive id from an earlier answer) pages back with RSM.
        """
        self._require()
        jid = self._buddy(with_user)
        if not self._mam:
            return []
        limit = min(max(limit, 1), 500)
        found: list[Archived] = []
        cursor: str | bool = before or True
        while len(found) < limit:
            page, complete, first, _ = await self._mam_query(
                with_jid=jid, before=cursor, limit=min(MAM_PAGE, limit - len(found)))
            found[:0] = page
            if complete or not first or not page:
                break
            cursor = first
        return [ChatMessage(id=m.archive_id or m.stanza_id, sender=m.sender,
                            recipient=m.recipient, body=m.body, sent_at=m.sent_at,
                            client_msg_id=m.origin_id or m.stanza_id or None)
                for m in found[-limit:]]

    async def set_presence(self, state: PresenceState, status_text: str) -> None:
        """online/away/busy/offline → show chat/away/dnd, or unavailable."""
        client = self._require()
        if state == "offline":
            client.send_presence(ptype="unavailable", pstatus=status_text or None)
        elif state in STATE_TO_SHOW:
            self._show = STATE_TO_SHOW[state]
            self._send_own_presence(client, pshow=self._show, status=status_text,
                                    priority=self._priority)
        else:
            raise ConfigError(f"presence must be online, away, busy or offline, not {state!r}")
        self._state, self._status = state, status_text
        await self._round_trip("presence update")

    async def events(self, cursor: str | None) -> AsyncIterator[PluginEvent]:
        """Archive after ``cursor`` first, then live events; ConnectionLost when it drops.

        The session first takes live messages (:meth:`_go_live`). Every archived message after
        ``cursor`` is yielded, even if an earlier stream of this session yielded it already (the
        caller asked to resume there); a live message is skipped when this stream's catch-up or
        an earlier stream already yielded it. A buddy's presence is yielded only when its
        (state, status text) differs from the last one yielded — also across a reconnect, where
        a buddy who went offline meanwhile gets an ``offline`` event.
        """
        self._require()
        try:
            await self._go_live()
            self._cursor = cursor or self._start_cursor
            caught_up: set[str] = set()
            if self._mam and self._cursor:
                try:
                    async for event in self._catch_up(self._cursor, caught_up):
                        yield event
                except (ApiError, ConfigError) as exc:
                    # the stream only ever ends in ConnectionLost
                    raise ConnectionLost(f"reading the archive of {self._jid} failed: "
                                         f"{exc.message}", retry_after=exc.retry_after) from exc
            if self._inherited:
                self._inherited = False
                for item in await self._gone_meanwhile():
                    self._inbox.put_nowait(item)
            while True:
                for gone in self._book.expire_due():  # sent, unanswered, now expired
                    yield PluginEvent(type="invite_answer", cursor=self._cursor,
                                      data=expired_data(gone))
                wait = self._book.wait(KEEPALIVE)
                try:  # asyncio.timeout, not wait_for: a cancel must never be swallowed here
                    async with asyncio.timeout(wait):
                        item = await self._inbox.get()
                except TimeoutError:  # quiet: make sure the server is still there (XEP-0199)
                    if wait < KEEPALIVE:
                        continue  # an invite's expiry is due, not a keepalive
                    with contextlib.suppress(RateLimited):
                        await self._round_trip("keepalive ping")
                    continue
                if item.type == "lost":
                    self._inbox.put_nowait(item)  # later readers learn it too
                    raise ConnectionLost(self._lost.message if self._lost
                                         else "connection lost")
                if item.type == "wake":
                    continue  # an invite was sent: its expiry is now awaited too
                if item.message is not None:
                    keys = dedup_keys(item.message)
                    if any(k in caught_up or k in self._yielded for k in keys):
                        continue
                    self._remember(keys)
                    self._cursor = item.message.archive_id or self._cursor
                elif item.type == "presence" and not self._announced.fresh(
                        item.data["username"], item.data["state"], item.data["status_text"]):
                    continue  # the same as last time: no news
                yield PluginEvent(type=item.type, cursor=self._cursor, data=item.data)
        except ConnectionLost:
            if not self._closed_by_us:  # the host reconnects: the next session goes on
                hand_over(self._handover_key(), self._announced)
            raise

    async def _go_live(self) -> None:
        """From now on take messages live: raise the presence priority to
        :data:`~interapp.plugins.xmpp.presence.LIVE_PRIORITY` — after asking the server to
        keep its offline store where it offers XEP-0013 (ejabberd would flush it to this
        session as its priority becomes non-negative). Prosody keeps it anyway for a session
        that queried the archive before its initial presence."""
        if self._live:
            return
        client = self._require()
        self._live = True
        disco = client.plugin["xep_0030"]
        try:
            info = await self._call(disco.get_info(jid=JID(self._jid), timeout=IQ_TIMEOUT),
                                    "service discovery")
            if NS_FLEX_OFFLINE in info["disco_info"]["features"]:
                # XEP-0013 §2.2: asking for the count makes ejabberd stop resending them
                await self._call(disco.get_info(jid=JID(self._jid), node=NS_FLEX_OFFLINE,
                                                timeout=IQ_TIMEOUT), "offline message count")
        except ConnectionLost:
            raise
        except InterappError:  # no XEP-0013 here: nothing to ask for
            pass
        self._priority = LIVE_PRIORITY
        if self._state != "offline":
            self._send_own_presence(client, pshow=self._show, status=self._status,
                                    priority=self._priority)
        try:  # once answered, the server has the new priority: catch-up covers what came before
            await self._round_trip("presence update")
        except RateLimited as exc:
            raise ConnectionLost(exc.message, retry_after=exc.retry_after) from exc

    async def _gone_meanwhile(self) -> list[InboxItem]:
        """After a reconnect: ``offline`` for the buddies the dropped stream last showed
        available who have no presence now (ejabberd sends none for offline contacts)."""
        await self._await_presence()
        client = self._require()
        out = []
        for jid in self._announced.available():
            if self._presence_of(client, jid)[0] == "offline":
                out.append(InboxItem("presence", {"username": jid, "state": "offline",
                                                  "status_text": "", "resource": ""}))
        return out

    async def close(self) -> None:
        """Close the stream (the server then tells the buddies this resource went offline)."""
        await self._teardown()


def _b64(value: str | None) -> bytes:
    if not value:
        raise ValueError("missing")
    return b64decode(value, validate=True)


__all__ = ["PASSWORD_KIND", "SCRAM_KIND", "XmppPlugin", "bare_jid", "parse_server",
           "retry_after_of", "stanza_error"]
