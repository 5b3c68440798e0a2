"""Invites carried as messages (the ``xmpp`` and ``matrix`` plug-ins): the per-session book.

On a network without invite objects an invite is a chat message with a readable body and the
invite's JSON (:meth:`~interapp.plugins.contract.Invite.to_json`) attached; the answer is a
message with the invite's JSON in state ``accepted``/``declined``. :class:`InviteBook` keeps
the invites a session sent and received and takes in each such message, sent or received, live
or read back from history, and **checks the JSON's claims against who really sent and received
the message**: a received invite is from its sender to the user whatever the JSON says; an
answer counts only from the invitee, for an invite the user sent; an invite id that one sender
used cannot be taken over by another. Taking in the same message twice changes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from interapp.errors import ApiNotFound, InvalidInvite, InviteClosed
from interapp.plugins.contract import INVITE_TTL, Invite, InviteState
from interapp.presence import Activity, render_activity

__all__ = ["InviteBook", "answer_body", "derive_invite_id", "event_data", "expired_data"]

Kind = Literal["invite", "answer"]
#: The longest a received invite stays open, whatever its sender's JSON says.
MAX_LIFETIME = timedelta(days=1)


def derive_invite_id(prefix: str, sender: str, client_invite_id: str) -> str:
    """The invite id: the same for a retry, different for another sender's same client id."""
    digest = hashlib.sha256(f"{sender}\n{client_invite_id}".encode()).hexdigest()
    return f"{prefix}{digest[:24]}"


def answer_body(invite: Invite) -> str:
    """The readable body of an answer (``"Accepted your invite to Arena · Ranked 2v2"``)."""
    what = render_activity(invite.activity)
    verb = "Accepted" if invite.state is InviteState.ACCEPTED else "Declined"
    return f"{verb} your invite" + (f" to {what}" if what else "")


class InviteBook:
    """The invites one session of one account sent and received (see the module docstring)."""

    def __init__(self, on_sent: Callable[[], None] | None = None) -> None:
        self.sent: dict[str, Invite] = {}
        self.received: dict[str, Invite] = {}
        self._on_sent = on_sent  # e.g. wake the event stream: an expiry may now be sooner

    def new(self, me: str, to: str, iid: str, *, activity: Activity | None,
            join_url: str | None, message: str) -> Invite:
        """The invite to send (not yet recorded: :meth:`record_sent` once it went out);
        :class:`~interapp.errors.InvalidInvite` without an activity or a join link."""
        if activity is None and not join_url:
            raise InvalidInvite("an invite needs an activity or a join link")
        now = datetime.now(UTC)
        return Invite(id=iid, from_user=me, to_user=to, activity=activity, join_url=join_url,
                      message=message, created_at=now,
                      expires_at=now + timedelta(seconds=INVITE_TTL))

    def record_sent(self, invite: Invite) -> None:
        """The invite went out."""
        self.sent[invite.id] = invite
        if self._on_sent is not None:
            self._on_sent()

    def to_answer(self, invite_id: str, accept: bool) -> Invite:
        """The answered form of a received, still open invite (not yet recorded).

        :class:`~interapp.errors.ApiNotFound` for an unknown id,
        :class:`~interapp.errors.InviteClosed` when it was answered or has expired.
        """
        got = self.received.get(invite_id)
        if got is None:
            raise ApiNotFound(f"no invite {invite_id!r}")
        if not got.is_open(datetime.now(UTC)):
            if got.state is InviteState.PENDING:
                got = self.received[invite_id] = dataclasses.replace(
                    got, state=InviteState.EXPIRED)
            raise InviteClosed(f"invite {invite_id} is {got.state} already")
        return dataclasses.replace(
            got, state=InviteState.ACCEPTED if accept else InviteState.DECLINED)

    def record_answer(self, invite: Invite) -> None:
        """The answer went out."""
        self.received[invite.id] = invite

    def expire_due(self, now: datetime | None = None) -> list[Invite]:
        """Sent invites that just passed ``expires_at`` unanswered, now marked ``expired`` (the
        plug-in yields each as an ``invite_answer`` event)."""
        now = now or datetime.now(UTC)
        out = []
        for iid, sent in list(self.sent.items()):
            if sent.state is InviteState.PENDING and now >= sent.expires_at:
                expired = self.sent[iid] = dataclasses.replace(sent, state=InviteState.EXPIRED)
                out.append(expired)
        return out

    def wait(self, limit: float, now: datetime | None = None) -> float:
        """Seconds an event stream may wait for news: ``limit``, or less when a sent invite
        expires sooner."""
        due = self.next_expiry()
        if due is None:
            return limit
        left = (due - (now or datetime.now(UTC))).total_seconds()
        return max(0.05, min(limit, left))

    def next_expiry(self) -> datetime | None:
        """When the next pending sent invite expires."""
        due = [i.expires_at for i in self.sent.values() if i.state is InviteState.PENDING]
        return min(due) if due else None

    def open(self) -> list[Invite]:
        """The open invites, sent and received, oldest first."""
        now = datetime.now(UTC)
        found = [i for i in (*self.received.values(), *self.sent.values()) if i.is_open(now)]
        return sorted(found, key=lambda i: (i.created_at, i.id))

    def absorb(self, kind: Kind, invite: Invite, *, me: str, sender: str,
               recipient: str) -> tuple[str, Invite] | None:
        """Take in an invite or answer message; the event due (``invite`` for a received
        invite, ``invite_answer`` for an answer to one the user sent), if any."""
        if kind == "invite":
            return self._invite(invite, me=me, sender=sender, recipient=recipient)
        if invite.state not in (InviteState.ACCEPTED, InviteState.DECLINED):
            return None
        if sender == me:  # the user's own answer, sent from another session
            known = self.received.get(invite.id)
            if known is not None and known.from_user == recipient:
                self.received[invite.id] = dataclasses.replace(known, state=invite.state)
            return None
        sent = self.sent.get(invite.id)
        if sent is None:  # sent by another session of the user: the JSON must say so
            if invite.from_user != me or invite.to_user != sender:
                return None
            sent = dataclasses.replace(invite, state=InviteState.PENDING)
        elif sent.to_user != sender:
            return None  # only the invitee answers
        if sent.state is not InviteState.PENDING and sent.state is not invite.state:
            return None  # expired, or answered otherwise: too late (it stays a message)
        answered = dataclasses.replace(sent, state=invite.state)
        self.sent[invite.id] = answered
        return "invite_answer", answered

    def _invite(self, invite: Invite, *, me: str, sender: str,
                recipient: str) -> tuple[str, Invite] | None:
        if sender == me:  # one the user sent from another session (history's copy)
            if invite.from_user == me and invite.to_user == recipient:
                self.sent.setdefault(invite.id, invite)
            return None
        if recipient != me:
            return None
        known = self.received.get(invite.id)
        if known is not None:
            return ("invite", known) if known.from_user == sender else None
        # the sender's clock is trusted no further than a day; past its time it is expired
        # (read back from history after a long absence), never open again
        expires = min(invite.expires_at, invite.created_at + MAX_LIFETIME)
        state = InviteState.PENDING if datetime.now(UTC) < expires else InviteState.EXPIRED
        fresh = dataclasses.replace(invite, from_user=sender, to_user=me, expires_at=expires,
                                    state=state)
        self.received[invite.id] = fresh
        return "invite", fresh


def expired_data(invite: Invite) -> dict[str, Any]:
    """The ``invite_answer`` event data of a sent invite that expired unanswered."""
    return event_data(invite, invite.to_user, {"body": ""})


def event_data(invite: Invite, sender: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The ``invite``/``invite_answer`` event data: the invite's JSON plus who sent the message
    and the message's own fields (``body`` — the readable fallback, ids, time)."""
    return {"invite": invite.to_json(), "from": sender, "username": sender, **extra}
