"""``/v1`` HTTP routes: profile, buddies, presence, messages, event tickets."""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from interapp.errors import BadRequest, Unauthorized
from interapp.presence import Activity, activity_from_json
from interapp.server import social
from interapp.server.api.deps import Caller, authenticate_token, server, token_check
from interapp.server.api.models import (
    ContactList,
    ContactOut,
    ContactRequestIn,
    ErrorBody,
    Message,
    MessageIn,
    MessageList,
    PendingList,
    PresenceIn,
    Profile,
    Ticket,
)
from interapp.server.storage.schema import tickets
from interapp.server.tokens import token_hash

_bearer = HTTPBearer(auto_error=False, description="An access token from /oauth/token")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 429, 503)}

router = APIRouter(prefix="/v1", responses=ERRORS)


async def bearer(creds: Annotated[HTTPAuthorizationCredentials | None,
                                  Security(_bearer)]) -> str:
    """The Bearer token, not looked up yet (the message route checks it in its batch)."""
    if creds is None:
        raise Unauthorized("missing Authorization: Bearer token")
    return creds.credentials


Token = Annotated[str, Depends(bearer)]


async def caller(request: Request, token: Token) -> Caller:
    """The authenticated caller (Bearer access token)."""
    return await authenticate_token(server(request), token)


Auth = Annotated[Caller, Depends(caller)]


@router.get("/me", response_model=Profile)
async def me(who: Auth) -> dict[str, Any]:
    """The caller's profile."""
    return who.user.profile()


@router.get("/contacts", response_model=ContactList)
async def list_contacts(request: Request, who: Auth, cursor: str | None = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
    """The buddy list, one page at a time (``next_cursor`` is null on the last page)."""
    async with server(request).db.begin() as conn:
        return await social.list_contacts(conn, who.user.id, cursor=cursor, limit=limit)


@router.get("/contacts/requests", response_model=PendingList)
async def contact_requests(request: Request, who: Auth) -> dict[str, Any]:
    """Pending buddy requests, both directions."""
    async with server(request).db.begin() as conn:
        return {"requests": await social.pending_requests(conn, who.user.id)}


@router.post("/contacts", response_model=ContactOut, status_code=201)
async def add_contact(request: Request, body: ContactRequestIn, who: Auth) -> dict[str, Any]:
    """Ask a user to become a buddy."""
    srv = server(request)
    async with srv.db.begin() as conn:
        out, published = await social.request_contact(conn, who.user, body.username)
    await srv.hub.publish(published)
    return out


@router.post("/contacts/{contact_id}/accept", response_model=ContactOut)
async def accept_contact(request: Request, contact_id: str, who: Auth) -> dict[str, Any]:
    """Accept a buddy request."""
    srv = server(request)
    async with srv.db.begin() as conn:
        out, published = await social.accept_contact(conn, who.user, contact_id)
    await srv.hub.publish(published)
    return out


@router.delete("/contacts/{contact_id}", status_code=204, response_class=Response)
async def remove_contact(request: Request, contact_id: str, who: Auth) -> Response:
    """Remove a buddy, or withdraw/decline a request."""
    srv = server(request)
    async with srv.db.begin() as conn:
        published = await social.remove_contact(conn, who.user, contact_id)
    await srv.hub.publish(published)
    return Response(status_code=204)


@router.put("/presence", response_model=Profile)
async def put_presence(request: Request, body: PresenceIn, who: Auth) -> dict[str, Any]:
    """Set presence, status text and/or the activity (rich presence: what the user plays);
    buddies get a ``presence`` event carrying all three."""
    srv = server(request)
    given = body.model_fields_set
    activity: Activity | social.Keep | None = social.KEEP
    if "activity" in given:
        activity = activity_from_json(None if body.activity is None
                                      else body.activity.model_dump())
    if body.state is None:
        if given != {"activity"}:
            raise BadRequest("state: Field required")
        state, text = who.user.presence, who.user.status_text
    else:
        state, text = body.state, body.status_text
    async with srv.db.begin() as conn:
        out, published = await social.set_presence(conn, who.user, state, text, activity)
    await srv.hub.publish(published)
    return out


@router.post("/messages", response_model=Message, status_code=201,
             response_model_by_alias=True)
async def send_message(request: Request, body: MessageIn, token: Token) -> dict[str, Any]:
    """Send a message to a buddy; a repeated ``client_msg_id`` returns the same message."""
    client_msg_id = body.client_msg_id or secrets.token_hex(12)
    # the token is checked in the transaction that stores the message (group commit)
    return await server(request).sends.submit(token_check(token), body.to, body.body,
                                              client_msg_id)


@router.get("/conversations/{username}/messages", response_model=MessageList,
            response_model_by_alias=True)
async def conversation(request: Request, username: str, who: Auth,
                       before: Annotated[str | None, Query(max_length=64)] = None,
                       limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    """History with one user, newest last; pass ``next_before`` as ``before`` for older."""
    async with server(request).db.begin() as conn:
        return await social.history(conn, who.user, username, before=before, limit=limit)


@router.post("/events/ticket", response_model=Ticket, status_code=201)
async def event_ticket(request: Request, who: Auth, token: Token) -> dict[str, Any]:
    """A single-use, short-lived ticket to open ``/v1/events?ticket=`` from a browser."""
    srv = server(request)
    ticket = secrets.token_urlsafe(32)
    async with srv.db.begin() as conn:
        await conn.execute(tickets.delete().where(tickets.c.expires_at < time.time()))
        await conn.execute(tickets.insert().values(
            hash=token_hash(ticket), user_id=who.user.id,
            expires_at=time.time() + srv.settings.ticket_ttl,
            token_hash=token_hash(token)))  # its stream closes when this token is revoked
    return {"ticket": ticket, "expires_in": srv.settings.ticket_ttl}
