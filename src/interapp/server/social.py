"""Buddies, presence and messages: the user information a verified plug-in may obtain.

Every function runs inside the caller's transaction and returns the events it appended, which
the caller publishes after the commit (see :mod:`interapp.server.events`).
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from interapp.errors import ApiNotFound, BadRequest, Conflict, Forbidden
from interapp.presence import Activity
from interapp.server.accounts import USER_COLUMNS, User, activity_of, find_user, get_user
from interapp.server.events import Event, append_events
from interapp.server.storage.fastsql import Statement, run
from interapp.server.storage.schema import contacts, messages, users
from interapp.server.tokens import sortable_id

PRESENCE_STATES = ("online", "away", "busy", "offline")
Published = list[tuple[str, Event]]


def iso(ts: float) -> str:
    """An RFC 3339 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def encode_cursor(value: str) -> str:
    """Opaque pagination cursor."""
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """Inverse of :func:`encode_cursor`; BadRequest when malformed."""
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not valid") from exc
    if "\x00" in value:
        raise BadRequest("cursor is not valid")
    return value


_CONTACTS = (sa.select(*USER_COLUMNS).select_from(
    contacts.join(users, users.c.id == contacts.c.contact_id))
    .where(contacts.c.user_id == sa.bindparam("user"), contacts.c.state == "accepted")
    .order_by(users.c.username).limit(sa.bindparam("limit")))
_CONTACTS_AFTER = _CONTACTS.where(users.c.username > sa.bindparam("after"))


async def list_contacts(conn: AsyncConnection, user_id: str, *, cursor: str | None,
                        limit: int) -> dict[str, Any]:
    """The accepted buddies of ``user_id``, by username, one page at a time."""
    params: dict[str, Any] = {"user": user_id, "limit": limit + 1}
    if cursor:
        params["after"] = decode_cursor(cursor)
    rows = (await conn.execute(_CONTACTS_AFTER if cursor else _CONTACTS, params)).all()
    page = rows[:limit]
    items = [{"id": r.id, "username": r.username, "display_name": r.display_name,
              "presence": r.presence, "status_text": r.status_text,
              "activity": activity_of(r.activity)} for r in page]
    next_cursor = encode_cursor(page[-1].username) if len(rows) > limit else None
    return {"contacts": items, "next_cursor": next_cursor}


async def pending_requests(conn: AsyncConnection, user_id: str) -> list[dict[str, Any]]:
    """Buddy requests waiting for this user's answer, and the ones they sent."""
    rows = await conn.execute(
        sa.select(contacts.c.state, *USER_COLUMNS)
        .select_from(contacts.join(users, users.c.id == contacts.c.contact_id))
        .where(contacts.c.user_id == user_id, contacts.c.state != "accepted")
        .order_by(users.c.username))
    return [{"id": r.id, "username": r.username, "display_name": r.display_name,
             "direction": r.state} for r in rows]


async def _relation(conn: AsyncConnection, user_id: str, other_id: str) -> str | None:
    return (await conn.execute(sa.select(contacts.c.state).where(
        contacts.c.user_id == user_id, contacts.c.contact_id == other_id))).scalar()


async def _accept_pair(conn: AsyncConnection, a: User, b: User) -> Published:
    await conn.execute(contacts.delete().where(sa.or_(
        sa.and_(contacts.c.user_id == a.id, contacts.c.contact_id == b.id),
        sa.and_(contacts.c.user_id == b.id, contacts.c.contact_id == a.id))))
    now = time.time()
    await conn.execute(contacts.insert(), [
        {"user_id": a.id, "contact_id": b.id, "state": "accepted", "created_at": now},
        {"user_id": b.id, "contact_id": a.id, "state": "accepted", "created_at": now}])
    return await append_events(conn, [
        (a.id, "contact_added", {"contact": b.profile()}),
        (b.id, "contact_added", {"contact": a.profile()})])


async def make_buddies(conn: AsyncConnection, a: User, b: User) -> Published:
    """Make two accounts buddies at once (admin)."""
    if a.id == b.id:
        raise BadRequest("a user cannot be their own buddy")
    if await _relation(conn, a.id, b.id) == "accepted":
        return []
    return await _accept_pair(conn, a, b)


async def request_contact(conn: AsyncConnection, user: User,
                          username: str) -> tuple[dict[str, Any], Published]:
    """Ask ``username`` to become a buddy (accepts at once if they had asked first)."""
    other = await find_user(conn, username)
    if other is None:
        raise ApiNotFound(f"no user {username!r}")
    if other.id == user.id:
        raise BadRequest("you cannot add yourself")
    state = await _relation(conn, user.id, other.id)
    if state == "accepted":
        raise Conflict(f"{username} is already your buddy")
    if state == "incoming":
        return {**other.profile(), "state": "accepted"}, await _accept_pair(conn, user, other)
    if state == "outgoing":
        return {**other.profile(), "state": "pending"}, []
    now = time.time()
    await conn.execute(contacts.insert(), [
        {"user_id": user.id, "contact_id": other.id, "state": "outgoing", "created_at": now},
        {"user_id": other.id, "contact_id": user.id, "state": "incoming", "created_at": now}])
    published = await append_events(conn, [(other.id, "contact_request", {
        "from": user.username, "id": user.id, "display_name": user.display_name})])
    return {**other.profile(), "state": "pending"}, published


async def accept_contact(conn: AsyncConnection, user: User,
                         contact_id: str) -> tuple[dict[str, Any], Published]:
    """Accept a pending request from ``contact_id``."""
    state = await _relation(conn, user.id, contact_id)
    other = await get_user(conn, contact_id)
    if other is None or state is None:
        raise ApiNotFound("no buddy request from that user")
    if state == "accepted":
        return {**other.profile(), "state": "accepted"}, []
    if state != "incoming":
        raise Conflict("only the asked user can accept a buddy request")
    return {**other.profile(), "state": "accepted"}, await _accept_pair(conn, user, other)


async def remove_contact(conn: AsyncConnection, user: User, contact_id: str) -> Published:
    """End a buddy relation or withdraw/decline a request."""
    other = await get_user(conn, contact_id)
    deleted = (await conn.execute(contacts.delete().where(sa.or_(
        sa.and_(contacts.c.user_id == user.id, contacts.c.contact_id == contact_id),
        sa.and_(contacts.c.user_id == contact_id, contacts.c.contact_id == user.id))))).rowcount
    if not deleted or other is None:
        raise ApiNotFound("that user is not your buddy")
    return await append_events(conn, [
        (user.id, "contact_removed", {"id": other.id, "username": other.username}),
        (other.id, "contact_removed", {"id": user.id, "username": user.username})])


async def buddy_ids(conn: AsyncConnection, user_id: str) -> list[str]:
    """Ids of accepted buddies."""
    rows = await conn.execute(sa.select(contacts.c.contact_id).where(
        contacts.c.user_id == user_id, contacts.c.state == "accepted"))
    return [r[0] for r in rows]


class Keep:
    """The activity is left as it is (``PUT /v1/presence`` without an ``activity``)."""


KEEP = Keep()


def stored_activity(activity: Activity | None) -> str | None:
    """The column value of ``activity`` (canonical JSON; NULL for none or an empty one)."""
    if activity is None or activity.is_empty:
        return None
    return json.dumps(activity.to_json(), separators=(",", ":"), ensure_ascii=False)


async def set_presence(conn: AsyncConnection, user: User, state: str, status_text: str,
                       activity: Activity | Keep | None = KEEP
                       ) -> tuple[dict[str, Any], Published]:
    """Set presence, status text and (unless :data:`KEEP`) the activity; tell every buddy
    (and the user's other streams) with one ``presence`` event that carries all three."""
    if state not in PRESENCE_STATES:
        raise BadRequest(f"state must be one of {', '.join(PRESENCE_STATES)}")
    values: dict[str, Any] = {"presence": state, "status_text": status_text}
    if isinstance(activity, Keep):  # the stored one, read in this transaction
        stored = (await conn.execute(sa.select(users.c.activity)
                                     .where(users.c.id == user.id))).scalar()
    else:
        stored = values["activity"] = stored_activity(activity)
    payload = {"username": user.username, "state": state, "status_text": status_text,
               "activity": activity_of(stored)}
    audience = [user.id, *await buddy_ids(conn, user.id)]
    published = await append_events(conn, [(uid, "presence", payload) for uid in audience])
    await conn.execute(sa.update(users).where(users.c.id == user.id).values(**values))
    return {**user.profile(), "presence": state, "status_text": status_text,
            "activity": payload["activity"]}, published


def _conv_key(a: str, b: str) -> str:
    return ":".join(sorted((a, b)))


def _message(row: Any, sender: str, recipient: str) -> dict[str, Any]:
    """The wire shape of a stored message (``row`` has the ``messages`` columns)."""
    m = row._mapping if hasattr(row, "_mapping") else row
    return {"message_id": m["id"], "client_msg_id": m["client_msg_id"], "from": sender,
            "to": recipient, "body": m["body"], "sent_at": iso(m["sent_at"])}


# The hot path's statements, built and compiled once (storage.fastsql).
_RECIPIENT = Statement(sa.select(users.c.id, contacts.c.state)
                       .select_from(users.outerjoin(contacts, sa.and_(
                           contacts.c.user_id == sa.bindparam("sender"),
                           contacts.c.contact_id == users.c.id)))
                       .where(users.c.username == sa.bindparam("to")))
_SAME_CLIENT_MSG = ["sender_id", "client_msg_id"]  # only this conflict means "sent before"
_INSERT_NEW: dict[str, Statement] = {}


def _insert_new(dialect: str) -> Statement:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING id`` for ``dialect``, built on first use (a
    SQLite server never imports the PostgreSQL dialect, ~2 MB)."""
    found = _INSERT_NEW.get(dialect)
    if found is None:
        values: dict[str, Any] = {c.name: sa.bindparam(c.name) for c in messages.c}
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            statement: Any = pg_insert(messages)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            statement = sqlite_insert(messages)
        found = _INSERT_NEW[dialect] = Statement(
            statement.values(values).on_conflict_do_nothing(index_elements=_SAME_CLIENT_MSG)
            .returning(messages.c.id))
    return found


EventItem = tuple[str, str, dict[str, Any]]


async def prepare_message(conn: AsyncConnection, sender: User, to: str, body: str,
                          client_msg_id: str) -> tuple[dict[str, Any], list[EventItem]]:
    """Store ``body`` for the buddy ``to``; return the message and the events still to append.

    The hot path of the server, in two statements: the recipient and the relation in one
    SELECT, then an ``INSERT … ON CONFLICT DO NOTHING``; only when that inserts nothing (a
    retry, or a concurrent request with the same ``client_msg_id``) is the stored message read
    back and compared, and then there is no event to append. The events are left to the caller
    so that a batch of messages appends all of its events at once (see
    :mod:`interapp.server.groupcommit`); an error is raised before anything is written.
    """
    found, _ = await run(conn, _RECIPIENT, {"sender": sender.id, "to": to})
    if not found:
        raise ApiNotFound(f"no user {to!r}")
    recipient_id, relation = found[0]
    row = {"id": sortable_id(), "sender_id": sender.id, "recipient_id": recipient_id,
           "client_msg_id": client_msg_id, "body": body, "sent_at": time.time(),
           "conv_key": _conv_key(sender.id, recipient_id)}
    if relation == "accepted":
        inserted, _ = await run(conn, _insert_new(conn.dialect.name), row)
        if inserted:
            msg = _message(row, sender.username, to)
            # the recipient first: the hub delivers in this order, and the recipient is the
            # one waiting for it (the sender's own streams get it for its other devices)
            audience = [recipient_id] if recipient_id == sender.id else [recipient_id, sender.id]
            return msg, [(uid, "message", msg) for uid in audience]
    existing = (await conn.execute(sa.select(messages).where(
        messages.c.sender_id == sender.id, messages.c.client_msg_id == client_msg_id))).first()
    if existing is not None:
        if existing.recipient_id != recipient_id or existing.body != body:
            raise Conflict("client_msg_id was already used for a different message")
        return _message(existing, sender.username, to), []
    raise Forbidden("only buddies can be messaged")


async def send_message(conn: AsyncConnection, sender: User, to: str, body: str,
                       client_msg_id: str) -> tuple[dict[str, Any], Published]:
    """Send ``body`` to the buddy ``to``; the same ``client_msg_id`` never makes a duplicate.

    :func:`prepare_message` and its events appended, in the caller's transaction.
    """
    msg, items = await prepare_message(conn, sender, to, body, client_msg_id)
    return msg, await append_events(conn, items)


async def history(conn: AsyncConnection, user: User, username: str, *, before: str | None,
                  limit: int) -> dict[str, Any]:
    """The conversation with ``username``, newest last, ``limit`` messages before ``before``."""
    other = await find_user(conn, username)
    if other is None:
        raise ApiNotFound(f"no user {username!r}")
    query = (sa.select(messages).where(messages.c.conv_key == _conv_key(user.id, other.id))
             .order_by(messages.c.id.desc()).limit(limit + 1))
    if before:
        query = query.where(messages.c.id < before)
    rows = (await conn.execute(query)).all()
    page = list(reversed(rows[:limit]))
    names = {user.id: user.username, other.id: other.username}
    items = [_message(r, names[r.sender_id], names[r.recipient_id]) for r in page]
    return {"messages": items, "next_before": page[0].id if len(rows) > limit else None}
