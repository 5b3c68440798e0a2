"""The agent's rich-presence and invite routes (``/agent/v1/activity``, ``/agent/v1/invites``).

The activity is held like the presence: set on every connected target (or the ones named),
shown again on each target that connects later and after the agent restarts (the event log
keeps it). Invites are sent, listed and answered on one named target. The events
``activity``, ``invite`` and ``invite_answer`` come on ``/agent/v1/events`` like every other
(see ``docs/agent.md``); a face shows an invite card from an ``invite`` event and answers it
with ``POST /agent/v1/invites/{target}/{invite_id}/accept`` or ``…/decline``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from interapp.agent import models as m
from interapp.host import Activity
from interapp.presence import activity_from_json

if TYPE_CHECKING:
    from interapp.agent.core import Agent

__all__ = ["ActivityIn", "ActivityOut", "InviteIn", "InviteOut", "InvitesOut", "add_routes",
           "load_held", "set_activity"]

PREFIX = "/agent/v1"
META = "activity"
TargetName = Annotated[str, Path(min_length=1, max_length=64)]
InviteId = Annotated[str, Path(min_length=1, max_length=128)]


class ActivityIn(m.Strict):
    """``PUT /agent/v1/activity``: ``activity`` (null clears it) on ``targets`` (default:
    every connected target, and each that connects later)."""

    activity: m.ActivityBody | None
    targets: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=64)


class ActivityOut(BaseModel):
    """Where it was shown and how: ``carried`` maps a target to ``native``, ``structured``,
    ``text`` (only readable status text) or ``none`` (the network shows no presence)."""

    activity: m.ActivityBody | None
    targets: list[str]
    carried: dict[str, str]
    errors: dict[str, str]


class InviteIn(m.Strict):
    """``POST /agent/v1/invites``: invite ``to`` on ``target`` to ``activity`` or ``join_url``
    (neither: the activity shown there). The same ``client_invite_id`` is one invite."""

    target: str = m.Name
    to: str = Field(min_length=1, max_length=256)
    activity: m.ActivityBody | None = None
    join_url: str | None = Field(default=None, min_length=1, max_length=2048)
    message: str = Field(default="", max_length=500)
    client_invite_id: str | None = Field(default=None, min_length=1, max_length=128,
                                         pattern=r"^[A-Za-z0-9._:-]+$")


class InviteOut(BaseModel):
    """An invite on one target (``outgoing``: you sent it; ``url``: where to join)."""

    model_config = ConfigDict(populate_by_name=True)

    target: str
    id: str
    from_: str = Field(alias="from")
    to: str
    activity: m.ActivityBody | None
    join_url: str | None
    url: str | None
    message: str
    created_at: str
    expires_at: str
    state: str
    outgoing: bool


class InvitesOut(BaseModel):
    """The open invites, sent and received (``problems``: targets that could not be asked)."""

    invites: list[InviteOut]
    problems: dict[str, m.ErrorBody]


def _activity(body: m.ActivityBody | None) -> Activity | None:
    return activity_from_json(None if body is None else body.model_dump())


async def load_held(agent: Agent) -> None:
    """The activity held before the agent restarted, from the event log's metadata."""
    held = await agent.log.get_meta(META)
    if held:
        agent.activity = (activity_from_json(json.loads(held), strict=False),)


async def set_activity(agent: Agent, activity: Activity | None,
                       targets: list[str] | None) -> dict[str, Any]:
    """Show ``activity`` (and hold it, when for every target)."""
    result = await agent.host.set_activity(activity, targets=targets)
    if targets is None:
        agent.activity = (activity,)
        await agent.log.set_meta(META, json.dumps(None if activity is None
                                                  else activity.to_json()))
    return result.to_dict()


def add_routes(app: FastAPI, agent: Agent, errors: dict[int | str, dict[str, Any]]) -> None:
    """Register the routes on the agent's app."""

    @app.put(f"{PREFIX}/activity", response_model=ActivityOut, responses=errors)
    async def put_activity(body: ActivityIn) -> dict[str, Any]:
        """Show an activity (rich presence) beside the presence; each network carries it as
        well as it can (``carried``), one that cannot gets its readable text as the status.
        Without ``targets`` the agent holds it for targets that connect later."""
        return await set_activity(agent, _activity(body.activity), body.targets)

    @app.get(f"{PREFIX}/invites", response_model=InvitesOut, response_model_by_alias=True,
             responses=errors)
    async def list_invites(target: Annotated[str | None, Query(min_length=1,
                                                               max_length=64)] = None
                           ) -> dict[str, Any]:
        """The open invites of one target, or across the connected ones."""
        if target:
            await agent._ready(target)
        found = await agent.host.invites(target)
        return {"invites": [i.to_dict() for i in found],
                "problems": {n: {"error": e.code, "message": e.message}
                             for n, e in found.problems.items()}}

    @app.post(f"{PREFIX}/invites", response_model=InviteOut, status_code=201,
              response_model_by_alias=True, responses=errors)
    async def send_invite(body: InviteIn) -> dict[str, Any]:
        """Invite a buddy; they get an ``invite`` event (or, on a network without invites, a
        message with the readable text and the join link)."""
        await agent._ready(body.target)
        found = await agent.host.invite(body.target, body.to, activity=_activity(body.activity),
                                        join_url=body.join_url, message=body.message,
                                        client_invite_id=body.client_invite_id)
        return found.to_dict()

    async def answer(target: str, invite_id: str, accept: bool) -> dict[str, Any]:
        await agent._ready(target)
        return (await agent.host.answer_invite(target, invite_id, accept)).to_dict()

    @app.post(f"{PREFIX}/invites/{{target}}/{{invite_id}}/accept", response_model=InviteOut,
              response_model_by_alias=True, responses=errors)
    async def accept_invite(target: TargetName, invite_id: InviteId) -> dict[str, Any]:
        """Accept an invite; the sender gets an ``invite_answer`` event. Then join at its
        ``url``."""
        return await answer(target, invite_id, True)

    @app.post(f"{PREFIX}/invites/{{target}}/{{invite_id}}/decline", response_model=InviteOut,
              response_model_by_alias=True, responses=errors)
    async def decline_invite(target: TargetName, invite_id: InviteId) -> dict[str, Any]:
        """Decline an invite; the sender gets an ``invite_answer`` event."""
        return await answer(target, invite_id, False)
