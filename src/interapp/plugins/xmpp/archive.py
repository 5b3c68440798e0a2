"""Chat messages of the ``xmpp`` plug-in: :class:`ArchiveMixin` handles live messages and send
errors, queries the user's XEP-0313 message archive (MAM) page by page, catches up after a
cursor, and remembers what was yielded so each message is yielded once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from slixmpp.jid import JID

from interapp.errors import ApiNotFound
from interapp.plugins.contract import PluginEvent
from interapp.plugins.xmpp.session import IQ_TIMEOUT, XmppSession
from interapp.plugins.xmpp.stanzas import (
    NS_CLIENT,
    NS_DELAY,
    NS_FORWARD,
    NS_MAM,
    Archived,
    InboxItem,
    dedup_keys,
    iso_time,
    parse_message,
)

MAM_PAGE = 50
CURSOR_START = "^"  # the start of the archive (it was empty when the cursor was handed out)
_SEEN_LIMIT = 5000


class ArchiveMixin(XmppSession):
    """Live and archived chat messages (see the ``client`` module docstring on the cursor)."""

    # --- handlers --------------------------------------------------------------------------

    def _on_message(self, client: Any, msg: Any) -> None:
        if msg["type"] not in ("chat", "normal") or msg.xml.find(f"{NS_MAM}result") is not None:
            return
        parsed = parse_message(msg.xml, self._jid)
        if parsed is None or parsed.sender == self._jid:
            return
        kind, data = self._message_event(parsed)
        self._inbox.put_nowait(InboxItem(kind, data, parsed))

    def _on_message_error(self, client: Any, msg: Any) -> None:
        waiter = self._send_errors.get(str(msg["id"]))
        if waiter is not None and not waiter.done():
            err = msg["error"]
            waiter.set_result((str(err["type"] or ""), str(err["condition"] or ""),
                               str(err["text"] or "")))

    def _on_mam_result(self, client: Any, msg: Any) -> None:
        if client is not self._client or str(JID(msg["from"]).bare) not in ("", self._jid):
            return  # only our own account's archive may answer
        result = msg.xml.find(f"{NS_MAM}result")
        bucket = self._mam_results.get(result.get("queryid") or "")
        if bucket is not None:
            bucket.append(result)

    # --- the archive -----------------------------------------------------------------------

    def _remember(self, keys: list[str]) -> None:
        for key in keys:
            self._yielded[key] = None
        while len(self._yielded) > _SEEN_LIMIT:
            self._yielded.popitem(last=False)

    async def _catch_up(self, cursor: str, caught_up: set[str]) -> AsyncIterator[PluginEvent]:
        after: str | None = None if cursor == CURSOR_START else cursor
        restarted = False
        while True:
            try:
                page, complete, _, last = await self._mam_query(after=after, limit=MAM_PAGE)
            except ApiNotFound:
                if after is None or restarted:
                    raise
                # the cursor's message is gone from the archive (expired): all that is left
                # is newer than it
                after, restarted = None, True
                continue
            for message in page:
                keys = dedup_keys(message)
                if message.sender == self._jid or any(k in caught_up for k in keys):
                    continue
                caught_up.update(keys)
                self._remember(keys)
                self._cursor = message.archive_id or self._cursor
                kind, data = self._message_event(message)
                yield PluginEvent(type=kind, cursor=self._cursor, data=data)
            if complete or not last or not page:
                return
            after = last

    async def _mam_query(self, *, with_jid: str | None = None, after: str | None = None,
                         before: str | bool | None = None, limit: int = MAM_PAGE,
                         ) -> tuple[list[Archived], bool, str | None, str | None]:
        """One XEP-0313 page: (messages, complete, first id, last id)."""
        client = self._require()
        iq = client.make_iq_set()
        query_id = str(iq["id"])
        iq["mam"]["queryid"] = query_id
        if with_jid:
            iq["mam"]["with"] = JID(with_jid)
        rsm = iq["mam"]["rsm"]
        rsm["max"] = str(limit)
        if after:
            rsm["after"] = after
        if before is True:
            rsm["before"] = True
        elif before:
            rsm["before"] = before
        bucket: list[Any] = []
        self._mam_results[query_id] = bucket
        try:
            resp = await self._call(iq.send(timeout=IQ_TIMEOUT), "archive query")
        finally:
            self._mam_results.pop(query_id, None)
        fin = resp.xml.find(f"{NS_MAM}fin")
        complete = fin is not None and fin.get("complete") in ("true", "1")
        rsm_set = resp["mam_fin"]["rsm"]
        first, last = str(rsm_set["first"] or "") or None, str(rsm_set["last"] or "") or None
        out: list[Archived] = []
        for result in bucket:
            forwarded = result.find(f"{NS_FORWARD}forwarded")
            inner = forwarded.find(f"{NS_CLIENT}message") if forwarded is not None else None
            if inner is None:
                continue
            parsed = parse_message(inner, self._jid)
            if parsed is None:
                continue
            delay = forwarded.find(f"{NS_DELAY}delay")
            parsed.archive_id = result.get("id")
            parsed.sent_at = iso_time(delay.get("stamp") if delay is not None else None)
            out.append(parsed)
        return out, complete, first, last
