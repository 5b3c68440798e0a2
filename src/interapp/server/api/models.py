"""Wire types of the ``/v1`` API (pydantic; they also generate ``/openapi.json``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Presence = Literal["online", "away", "busy", "offline"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        """No text field may carry a NUL character (PostgreSQL cannot store one)."""
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class PartyBody(_Strict):
    """The party of an activity: its id, size and capacity (``size`` ≤ ``max``)."""

    id: str | None = Field(default=None, max_length=128)
    size: int | None = Field(default=None, ge=1, le=1000, strict=True)
    max: int | None = Field(default=None, ge=1, le=1000, strict=True)


class JoinBody(_Strict):
    """Where a buddy joins: an http(s) link or an application's own scheme."""

    url: str = Field(min_length=1, max_length=2048)


class ActivityBody(_Strict):
    """Rich presence: what the user is doing, beside the presence state (all optional).

    Text fields are one line of at most 128 characters; ``started_at`` is an RFC 3339 time
    with an offset; a join link may not use a scheme that runs code (``javascript:``, ``data:``,
    ``file:``, …). A malformed activity is refused with 400 ``invalid_activity``.
    """

    name: str | None = Field(default=None, max_length=128)
    details: str | None = Field(default=None, max_length=128)
    state: str | None = Field(default=None, max_length=128)
    party: PartyBody | None = None
    started_at: str | None = Field(default=None, max_length=40,
                                   examples=["2026-12-03T11:48:00.000Z"])
    join: JoinBody | None = None


class Profile(_Strict):
    """An account's profile."""

    id: str
    username: str
    display_name: str
    presence: Presence
    status_text: str
    activity: ActivityBody | None = None


class ContactList(_Strict):
    """One page of the buddy list."""

    contacts: list[Profile]
    next_cursor: str | None


class ContactRequestIn(_Strict):
    """``POST /v1/contacts``."""

    username: str = Field(min_length=1, max_length=64)


class ContactOut(_Strict):
    """A buddy or pending buddy."""

    id: str
    username: str
    display_name: str
    presence: Presence
    status_text: str
    activity: ActivityBody | None = None
    state: Literal["pending", "accepted"]


class PendingRequest(_Strict):
    """A buddy request: ``incoming`` waits for this user's answer, ``outgoing`` for theirs."""

    id: str
    username: str
    display_name: str
    direction: Literal["incoming", "outgoing"]


class PendingList(_Strict):
    """``GET /v1/contacts/requests``."""

    requests: list[PendingRequest]


class PresenceIn(_Strict):
    """``PUT /v1/presence``: ``state`` (and ``status_text``, cleared when absent), and/or
    ``activity`` (absent: unchanged; ``null``: cleared). A body of only ``activity`` keeps the
    state and status text as they are."""

    state: Presence | None = None
    status_text: str = Field(default="", max_length=256)
    activity: ActivityBody | None = None


class InviteIn(_Strict):
    """``POST /v1/invites``: invite a buddy to ``activity`` or ``join_url`` (neither: the
    sender's current activity). A repeated ``client_invite_id`` returns the same invite."""

    to: str = Field(min_length=1, max_length=64)
    activity: ActivityBody | None = None
    join_url: str | None = Field(default=None, min_length=1, max_length=2048)
    message: str = Field(default="", max_length=500)
    client_invite_id: str | None = Field(default=None, min_length=1, max_length=128)
    expires_in: int = Field(default=600, ge=1, le=86400,
                            description="Seconds until the invite expires (default 10 min).")


class InviteOut(BaseModel):
    """An invite, as answered and as carried by ``invite``/``invite_answer`` events."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    id: str
    from_: str = Field(alias="from")
    to: str
    activity: ActivityBody | None
    join_url: str | None
    message: str
    created_at: str
    expires_at: str
    state: Literal["pending", "accepted", "declined", "expired"]


class InviteList(BaseModel):
    """``GET /v1/invites``: the pending invites sent to and by the caller, oldest first."""

    invites: list[InviteOut]


class MessageIn(_Strict):
    """``POST /v1/messages``."""

    to: str = Field(min_length=1, max_length=64)
    body: str = Field(min_length=1, max_length=8000)
    client_msg_id: str | None = Field(default=None, min_length=1, max_length=128)


class Message(BaseModel):
    """A message as stored and as carried by ``message`` events."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    message_id: str
    client_msg_id: str
    from_: str = Field(alias="from")
    to: str
    body: str
    sent_at: str


class MessageList(BaseModel):
    """``GET /v1/conversations/{username}/messages``: oldest first, newest last."""

    messages: list[Message]
    next_before: str | None


class Ticket(_Strict):
    """A single-use ticket for opening the event stream from a browser."""

    ticket: str
    expires_in: int


class ErrorBody(_Strict):
    """Every ``/v1`` error."""

    error: str
    message: str


class OAuthErrorBody(_Strict):
    """RFC 6749 §5.2 error."""

    error: str
    error_description: str


class Introspection(BaseModel):
    """RFC 7662 §2.2: ``{"active": false}``, or what a live token stands for."""

    model_config = ConfigDict(extra="forbid")

    active: bool
    client_id: str | None = None
    username: str | None = None
    sub: str | None = None
    iss: str | None = None
    iat: int | None = None
    exp: int | None = None
    token_type: str | None = None
    scope: str | None = None


class Revoked(_Strict):
    """RFC 7009 §2.2: an empty JSON object, whether or not the token existed."""


class TokenResponse(BaseModel):
    """RFC 6749 §5.1 / RFC 8693 §2.2.1 success."""

    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str | None = None
    issued_token_type: str | None = None
    scope: str | None = None
    id_token: str | None = None  # OpenID Connect, with the openid scope
