"""``/v1/invites``: invite a buddy to an activity, answer an invite, list the open ones."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request

from interapp.errors import InvalidInvite
from interapp.presence import activity_from_json, check_join_url
from interapp.server import invites
from interapp.server.api.deps import server
from interapp.server.api.models import InviteIn, InviteList, InviteOut
from interapp.server.api.routes import ERRORS, Auth

router = APIRouter(prefix="/v1", responses=ERRORS)


@router.post("/invites", response_model=InviteOut, status_code=201,
             response_model_by_alias=True)
async def send_invite(request: Request, body: InviteIn, who: Auth) -> dict[str, Any]:
    """Invite a buddy to ``activity`` or ``join_url``; they get an ``invite`` event.

    A repeated ``client_invite_id`` returns the same invite (and tells nobody again).
    """
    activity = activity_from_json(None if body.activity is None else body.activity.model_dump())
    join_url = (None if body.join_url is None
                else check_join_url(body.join_url, "join_url", InvalidInvite))
    srv = server(request)
    async with srv.db.begin() as conn:
        out, published = await invites.create_invite(
            conn, who.user, body.to, activity=activity, join_url=join_url, message=body.message,
            client_invite_id=body.client_invite_id or secrets.token_hex(12),
            ttl=float(body.expires_in))
    await srv.hub.publish(published)
    return out


@router.get("/invites", response_model=InviteList, response_model_by_alias=True)
async def open_invites(request: Request, who: Auth) -> dict[str, Any]:
    """The pending invites sent to and by the caller, oldest first."""
    srv = server(request)
    async with srv.db.begin() as conn:
        found, published = await invites.list_invites(conn, who.user)
    await srv.hub.publish(published)
    return {"invites": found}


async def _answer(request: Request, who: Auth, invite_id: str, accept: bool) -> dict[str, Any]:
    srv = server(request)
    async with srv.db.begin() as conn:
        out, published, error = await invites.answer_invite(conn, who.user, invite_id, accept)
    await srv.hub.publish(published)
    if error is not None:
        raise error
    return out


@router.post("/invites/{invite_id}/accept", response_model=InviteOut,
             response_model_by_alias=True)
async def accept_invite(request: Request, invite_id: str, who: Auth) -> dict[str, Any]:
    """Accept an invite sent to the caller; the sender gets an ``invite_answer`` event."""
    return await _answer(request, who, invite_id, True)


@router.post("/invites/{invite_id}/decline", response_model=InviteOut,
             response_model_by_alias=True)
async def decline_invite(request: Request, invite_id: str, who: Auth) -> dict[str, Any]:
    """Decline an invite sent to the caller; the sender gets an ``invite_answer`` event."""
    return await _answer(request, who, invite_id, False)
