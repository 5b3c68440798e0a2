"""Rich presence and invites of the ``matrix`` plug-in: :class:`RichMixin` (the content formats
are in :mod:`~interapp.plugins.matrix.rich`).

* :meth:`RichMixin.set_activity` keeps the choice in the account data ``org.interapp.activity``,
  puts the readable text in the presence ``status_msg`` (after the user's status text, kept in
  ``io.interapp.presence``), and sets the ``org.interapp.activity`` state event (state key: the
  user) in every direct room — a timeline event of that type where the room's power levels
  refuse the state event. Nothing the network cannot carry is an error.
* Buddies' activity comes from those events: ``/sync`` turns a change into an ``activity``
  event, presence events carry the buddy's current ``activity``, ``buddies()`` fills
  ``Buddy.activity`` from the rooms' state.
* Invites are ``m.room.message`` events with ``org.interapp.invite`` /
  ``org.interapp.invite_answer`` beside a readable body, sent in the direct room with the
  transaction id derived from the invite id (a retry is the same event). Received ones go
  through :class:`~interapp.plugins.invitebook.InviteBook`; what this session did not see is
  read back from the direct rooms' recent messages.
"""

from __future__ import annotations

import asyncio
import secrets
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

from interapp.errors import ApiNotFound, ConfigError, Forbidden, InvalidActivity
from interapp.plugins.contract import Invite, Plugin, TargetConfig
from interapp.plugins.invitebook import InviteBook, answer_body, derive_invite_id, event_data
from interapp.plugins.matrix.api import MatrixApi, q
from interapp.plugins.matrix.rich import (
    ACTIVITY_EVENT,
    activity_content,
    answer_content,
    invite_content,
    invite_of_message,
    status_with_activity,
)
from interapp.plugins.matrix.sync import (
    FROM_MATRIX,
    MESSAGE,
    MESSAGES_FILTER,
    PRESENCE_CHOICE,
    TO_MATRIX,
    DirectRooms,
)
from interapp.presence import Activity, activity_from_json

#: Messages read back per direct room to find invites this session did not see.
RECOVER_LIMIT = 50
_UNKNOWN = object()


class RichMixin(Plugin):
    """Activities and invites over Matrix (see the module docstring)."""

    api: MatrixApi
    _sync_presence: str

    def __init__(self, target: TargetConfig) -> None:
        super().__init__(target)
        self._activity: Activity | object | None = _UNKNOWN  # the user's own, once known
        self._book = InviteBook()
        self._recovered = False

    @abstractmethod
    def _me(self) -> str: ...

    @abstractmethod
    def _user(self, name: str) -> str: ...

    @abstractmethod
    async def _scan(self) -> tuple[DirectRooms, dict[str, Any]]: ...

    @abstractmethod
    async def _room_with(self, user: str) -> str | None: ...

    @abstractmethod
    async def _create_direct_room(self, user: str) -> str: ...

    # --- own activity --------------------------------------------------------------------------

    async def _account_data(self, kind: str) -> Mapping[str, Any]:
        try:
            return await self.api.request("GET", f"/user/{q(self._me())}/account_data/{kind}")
        except ApiNotFound:
            return {}

    def _adopt_activity(self, content: Any) -> None:
        """The user's activity as the account data says (set by any of their processes)."""
        if isinstance(content, Mapping):
            try:
                self._activity = activity_from_json(content.get("activity"), strict=False)
            except InvalidActivity:
                self._activity = None

    async def _own_activity(self) -> Activity | None:
        """The activity the user set (from account data when this session did not set it)."""
        if self._activity is _UNKNOWN:
            self._activity = None
            self._adopt_activity(await self._account_data(ACTIVITY_EVENT))
        return self._activity if isinstance(self._activity, Activity) else None

    async def _status_msg(self, status_text: str) -> str:
        """The ``status_msg`` for ``status_text``: with the readable activity after it."""
        return status_with_activity(status_text, await self._own_activity())

    async def set_activity(self, activity: Activity | None) -> None:
        """Readable in ``status_msg``, structured in each direct room's state (see module)."""
        me = self._me()
        self._activity = activity
        await self.api.request("PUT", f"/user/{q(me)}/account_data/{ACTIVITY_EVENT}",
                               json_body=activity_content(activity))
        direct, _ = await self._scan()
        rooms = [r for found in direct.direct_rooms().values() for r in found]
        content = activity_content(activity)

        async def one(room_id: str) -> None:
            try:
                await self.api.request(
                    "PUT", f"/rooms/{q(room_id)}/state/{ACTIVITY_EVENT}/{q(me)}",
                    json_body=content)
            except Forbidden:  # power levels refuse it: a timeline event says the same
                await self.api.request(
                    "PUT", f"/rooms/{q(room_id)}/send/{ACTIVITY_EVENT}/"
                           f"{q('act-' + secrets.token_hex(8))}", json_body=content)

        await asyncio.gather(*(one(r) for r in rooms))
        # after the rooms: a buddy who sees the new status text has the structured form too
        choice = await self._account_data(PRESENCE_CHOICE)
        state = str(choice.get("state") or FROM_MATRIX.get(self._sync_presence, "online"))
        await self.api.request("PUT", f"/presence/{q(me)}/status", json_body={
            "presence": TO_MATRIX.get(state, "online"),
            "status_msg": status_with_activity(str(choice.get("status_text") or ""),
                                               activity)})

    # --- invites -------------------------------------------------------------------------------

    async def invite(self, to: str, *, activity: Activity | None, join_url: str | None,
                     message: str, client_invite_id: str) -> Invite:
        """Send ``to`` an invite in the direct room (created if none)."""
        me, user = self._me(), self._user(to)
        if user == me:
            raise ConfigError("you cannot invite yourself")
        if not client_invite_id:
            raise ConfigError("an invite needs a client_invite_id")
        iid = derive_invite_id("mi-", me, client_invite_id)
        known = self._book.sent.get(iid)
        if known is not None:
            return known
        sent = self._book.new(me, user, iid, activity=activity, join_url=join_url,
                              message=message)
        room_id = await self._room_with(user) or await self._create_direct_room(user)
        await self.api.request("PUT", f"/rooms/{q(room_id)}/send/{MESSAGE}/{q(iid)}",
                               json_body=invite_content(sent))
        self._book.record_sent(sent)
        return sent

    async def answer_invite(self, invite_id: str, accept: bool) -> Invite:
        """Accept or decline a received invite; the answer goes to the sender's direct room."""
        self._me()
        if invite_id not in self._book.received:
            await self._recover()
        answered = self._book.to_answer(invite_id, accept)
        room_id = await self._room_with(answered.from_user)
        if room_id is None:
            raise ApiNotFound(f"no direct room with {answered.from_user} any more")
        await self.api.request(
            "PUT", f"/rooms/{q(room_id)}/send/{MESSAGE}/{q(f'{invite_id}.{answered.state}')}",
            json_body=answer_content(answered, answer_body(answered)))
        self._book.record_answer(answered)
        return answered

    async def invites(self) -> list[Invite]:
        """The open invites sent to and by the user (recent history read once a session)."""
        self._me()
        await self._recover()
        return self._book.open()

    async def _recover(self) -> None:
        """Read the direct rooms' recent messages for invites and answers not seen yet."""
        if self._recovered:
            return
        self._recovered = True
        me = self._me()
        direct, _ = await self._scan()

        async def one(user: str, room_id: str) -> list[tuple[str, dict[str, Any]]]:
            page = await self.api.request("GET", f"/rooms/{q(room_id)}/messages", params={
                "dir": "b", "limit": str(RECOVER_LIMIT), "filter": MESSAGES_FILTER})
            return [(user, e) for e in reversed(page.get("chunk", []))
                    if e.get("type") == MESSAGE]

        found = await asyncio.gather(*(one(u, rooms[0]) for u, rooms in
                                       direct.direct_rooms().items()))
        for user, event in (pair for pairs in found for pair in pairs):
            sender = str(event.get("sender", ""))
            parts = invite_of_message(event.get("content"))
            if parts is not None:
                self._book.absorb(parts[0], parts[1], me=me, sender=sender,
                                  recipient=user if sender == me else me)

    def _classify(self, room_id: str, event: Mapping[str, Any], data: dict[str, Any]
                  ) -> tuple[str, dict[str, Any]]:
        """An ``m.room.message`` → ``invite`` / ``invite_answer`` when it carries one."""
        parts = invite_of_message(event.get("content"))
        if parts is None:
            return "message", data
        found = self._book.absorb(parts[0], parts[1], me=self._me(), sender=data["from"],
                                  recipient=data["to"])
        if found is None:
            return "message", data
        kind, invite = found
        return kind, event_data(invite, data["from"], {
            "body": data["body"], "message_id": data["message_id"], "room_id": room_id,
            "sent_at": data["sent_at"]})


__all__ = ["RichMixin"]
