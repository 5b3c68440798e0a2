"""Invites: one buddy asks another to join an activity (or a link), who accepts or declines.

Theory of operation
-------------------
``POST /v1/invites`` stores a *pending* invite and appends an ``invite`` event for the
recipient; ``POST /v1/invites/{id}/accept|decline`` (the recipient only) answers it and appends an
``invite_answer`` event for both (the sender learns the answer; the recipient's other devices
drop the card). Invites expire (:data:`DEFAULT_TTL`, 10 minutes, unless the sender asks for
less or more): an expired one can no longer be answered, and it is marked ``expired`` — with an
``invite_answer`` event to both — by the server's sweep (:class:`ExpirySweep`, every few
seconds) or sooner, when either side sends, lists or answers invites.
Only buddies can be invited. ``(sender, client_invite_id)`` is unique, so a retry returns the
same invite (and appends nothing); the same id for a different invite is a 409.

Every function runs in the caller's transaction and returns the events it appended, which the
caller publishes after the commit (see :mod:`interapp.server.events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.errors import (
    ApiNotFound,
    BadRequest,
    Conflict,
    Forbidden,
    InterappError,
    InvalidInvite,
    InviteClosed,
)
from interapp.plugins.contract import Invite, InviteState
from interapp.presence import Activity, activity_from_json
from interapp.server.accounts import User, find_user
from interapp.server.events import EventHub, append_events
from interapp.server.social import Published, stored_activity
from interapp.server.storage import Database
from interapp.server.storage.fastsql import ReadStatement
from interapp.server.storage.schema import contacts, invites, users
from interapp.server.tokens import sortable_id

__all__ = ["DEFAULT_TTL", "MAX_TTL", "MIN_TTL", "ExpirySweep", "answer_invite",
           "create_invite", "expire_all", "list_invites"]

log = logging.getLogger("interapp.server.invites")
DEFAULT_TTL = 600.0
SWEEP_SECONDS = 5.0
KEEP_ANSWERED = 86400.0  # an answered or expired invite is deleted a day later
MIN_TTL = 1.0
MAX_TTL = 86400.0

_sender = users.alias("sender")
_recipient = users.alias("recipient")
_WITH_NAMES = (sa.select(invites, _sender.c.username.label("from_name"),
                         _recipient.c.username.label("to_name"))
               .select_from(invites.join(_sender, _sender.c.id == invites.c.sender_id)
                            .join(_recipient, _recipient.c.id == invites.c.recipient_id)))


# the sweep's one read: is anything due (to expire, or answered long ago, to delete)?
_ANY_DUE = ReadStatement(sa.select(invites.c.id).where(sa.or_(
    sa.and_(invites.c.state == "pending", invites.c.expires_at <= sa.bindparam("now")),
    sa.and_(invites.c.state != "pending", invites.c.answered_at < sa.bindparam("old"))))
    .limit(1))


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _wire(row: Any, state: str | None = None) -> dict[str, Any]:
    """The wire form of an invite row (from :data:`_WITH_NAMES`)."""
    m = row._mapping
    stored = m["activity"]
    invite = Invite(id=m["id"], from_user=m["from_name"], to_user=m["to_name"],
                    activity=activity_from_json(json.loads(stored)) if stored else None,
                    join_url=m["join_url"], message=m["message"],
                    created_at=_when(m["created_at"]), expires_at=_when(m["expires_at"]),
                    state=InviteState(state or m["state"]))
    return invite.to_json()


async def _expire_due(conn: AsyncConnection, user_id: str | None, now: float) -> Published:
    """Mark the pending invites past their time ``expired`` (``user_id``'s, either side; all
    with None) and tell both sides. The rows are claimed by one ``UPDATE … RETURNING``, so two
    processes sweeping at once never announce the same invite twice."""
    where = [invites.c.state == "pending", invites.c.expires_at <= now]
    if user_id is not None:
        where.append(sa.or_(invites.c.sender_id == user_id, invites.c.recipient_id == user_id))
    claimed = (await conn.execute(sa.update(invites).where(*where)
                                  .values(state="expired", answered_at=now)
                                  .returning(invites.c.id))).all()
    if not claimed:
        return []
    due = (await conn.execute(_WITH_NAMES.where(
        invites.c.id.in_([r.id for r in claimed])).order_by(invites.c.id))).all()
    items = []
    for row in due:
        wire = _wire(row, "expired")
        items += [(row.sender_id, "invite_answer", wire), (row.recipient_id, "invite_answer", wire)]
    return await append_events(conn, items)


async def expire_all(conn: AsyncConnection, now: float | None = None) -> Published:
    """:func:`_expire_due` for every account (the server's periodic sweep)."""
    return await _expire_due(conn, None, time.time() if now is None else now)


class ExpirySweep:
    """Every ``interval`` seconds, expire the invites past their time and publish the
    ``invite_answer`` events, so a sender learns of an expiry without asking."""

    def __init__(self, db: Database, hub: EventHub, interval: float = SWEEP_SECONDS) -> None:
        self._db, self._hub, self._interval = db, hub, interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start sweeping."""
        self._task = asyncio.create_task(self._run(), name="invite-expiry")

    async def stop(self) -> None:
        """Stop sweeping."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sweep(self) -> int:
        """One pass; how many events it published. Answered invites are kept for
        :data:`KEEP_ANSWERED` seconds, then deleted. Nothing due: one read, no write."""
        now = time.time()
        due = await self._db.read_first(_ANY_DUE, {"now": now, "old": now - KEEP_ANSWERED})
        if due is None:
            return 0
        async with self._db.begin() as conn:
            published = await expire_all(conn, now)
            await conn.execute(invites.delete().where(invites.c.state != "pending",
                                                      invites.c.answered_at < now - KEEP_ANSWERED))
        await self._hub.publish(published)
        return len(published)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except Exception as exc:  # e.g. the database is away: the next pass tries again
                log.debug("invite expiry sweep failed: %s", type(exc).__name__)


async def create_invite(conn: AsyncConnection, sender: User, to: str, *,
                        activity: Activity | None, join_url: str | None, message: str,
                        client_invite_id: str, ttl: float = DEFAULT_TTL
                        ) -> tuple[dict[str, Any], Published]:
    """Invite the buddy ``to``; the invite and the events (an ``invite`` for ``to``).

    With neither ``activity`` nor ``join_url`` the sender's current activity is the one
    invited to; without one either, :class:`~interapp.errors.InvalidInvite`.
    """
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise InvalidInvite(f"expires_in must be between {MIN_TTL:.0f} and {MAX_TTL:.0f} s")
    other = await find_user(conn, to)
    if other is None:
        raise ApiNotFound(f"no user {to!r}")
    if other.id == sender.id:
        raise BadRequest("you cannot invite yourself")
    now = time.time()
    published = await _expire_due(conn, sender.id, now)
    existing = (await conn.execute(_WITH_NAMES.where(
        invites.c.sender_id == sender.id,
        invites.c.client_invite_id == client_invite_id))).first()
    given = stored_activity(activity)
    if existing is not None:  # a retry: the same invite, nothing appended
        same_activity = given == existing.activity or (activity is None and join_url is None)
        if (existing.recipient_id != other.id or existing.join_url != join_url
                or existing.message != message or not same_activity):
            raise Conflict("client_invite_id was already used for a different invite")
        return _wire(existing), published
    if activity is None and join_url is None:  # the sender's current activity
        current = (await conn.execute(sa.select(users.c.activity)
                                      .where(users.c.id == sender.id))).scalar()
        activity = activity_from_json(json.loads(current)) if current else None
    stored = stored_activity(activity)
    if stored is None and join_url is None:
        raise InvalidInvite("an invite needs an activity or a join_url (and you show no "
                            "activity to invite to)")
    relation = (await conn.execute(sa.select(contacts.c.state).where(
        contacts.c.user_id == sender.id, contacts.c.contact_id == other.id))).scalar()
    if relation != "accepted":
        raise Forbidden("only buddies can be invited")
    invite_id = sortable_id()
    row: dict[str, Any] = {"id": invite_id, "sender_id": sender.id, "recipient_id": other.id,
           "client_invite_id": client_invite_id, "activity": stored, "join_url": join_url,
           "message": message, "state": "pending", "created_at": now, "expires_at": now + ttl,
           "answered_at": None}
    await conn.execute(invites.insert().values(**row))
    wire = Invite(id=invite_id, from_user=sender.username, to_user=other.username,
                  activity=activity if stored else None, join_url=join_url, message=message,
                  created_at=_when(now), expires_at=_when(now + ttl)).to_json()
    published += await append_events(conn, [(other.id, "invite", wire)])
    return wire, published


async def answer_invite(conn: AsyncConnection, user: User, invite_id: str, accept: bool
                        ) -> tuple[dict[str, Any], Published, InterappError | None]:
    """Accept or decline invite ``invite_id`` sent to ``user``.

    Returns the invite, the events and the error to answer *after* the commit (an expired
    invite is marked so, and both sides told, before the 409): repeating the same answer
    returns the invite again; another answer to an answered or expired one is
    :class:`~interapp.errors.InviteClosed`.
    """
    row = (await conn.execute(_WITH_NAMES.where(invites.c.id == invite_id,
                                                invites.c.recipient_id == user.id))).first()
    if row is None:
        raise ApiNotFound("no such invite for you")
    wanted = "accepted" if accept else "declined"
    now = time.time()
    if row.state == "pending" and row.expires_at <= now:
        published = await _expire_due(conn, user.id, now)
        return _wire(row, "expired"), published, InviteClosed("the invite has expired")
    if row.state == wanted:
        return _wire(row), [], None
    if row.state != "pending":
        raise InviteClosed(f"the invite was {row.state} already")
    done = (await conn.execute(sa.update(invites).where(invites.c.id == invite_id,
                                                        invites.c.state == "pending")
                               .values(state=wanted, answered_at=now))).rowcount
    if not done:  # answered concurrently
        raise InviteClosed("the invite was answered meanwhile")
    wire = _wire(row, wanted)
    published = await append_events(conn, [(row.sender_id, "invite_answer", wire),
                                           (user.id, "invite_answer", wire)])
    return wire, published, None


async def list_invites(conn: AsyncConnection, user: User) -> tuple[list[dict[str, Any]],
                                                                   Published]:
    """The pending invites sent to and by ``user``, oldest first (expired ones marked so)."""
    now = time.time()
    published = await _expire_due(conn, user.id, now)
    rows = (await conn.execute(_WITH_NAMES.where(
        invites.c.state == "pending", invites.c.expires_at > now,
        sa.or_(invites.c.sender_id == user.id, invites.c.recipient_id == user.id))
        .order_by(invites.c.created_at, invites.c.id))).all()
    return [_wire(r) for r in rows], published
