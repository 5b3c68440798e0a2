"""The shapes of the agent's local API (pydantic): what each route takes and answers.

These models are the OpenAPI document (``/agent/v1/openapi.json``): FastAPI validates every
request against them and every answer is serialized through them, so the document and what is
served cannot drift apart (a test checks it, and fuzzes every route from the document).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Name = Field(min_length=1, max_length=64)
State = Literal["online", "away", "busy", "offline"]


class Strict(BaseModel):
    """Unknown fields are refused (a typo is an error, not silently ignored)."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every error: a stable ``error`` code and a one-line ``message`` (and the ``target``
    it is about, when there is one)."""

    error: str
    message: str
    target: str | None = None


class AgentInfo(BaseModel):
    version: str
    pid: int
    started_at: str
    last_seq: int = Field(description="The newest event seq; resume the events from here.")


class LocalOut(BaseModel):
    server: str
    issuer: str
    client_id: str
    username: str | None


class PresenceHeld(BaseModel):
    state: State
    status_text: str
    held: bool = Field(description="True once presence was set through the agent: it is "
                                   "applied to every target that connects, until changed.")


class TargetRow(BaseModel):
    name: str
    plugin: str
    server: str
    client_id: str | None
    tls: bool | None
    options: dict[str, str]
    account_system: str
    state: Literal["idle", "connecting", "connected", "degraded", "needs_reauth", "failed"]
    link_state: str | None = Field(description="linked, degraded, needs_reauth, revoked; null "
                                               "when there is no stored link")
    remote_account: str | None
    account: str | None = Field(description="The remote account connected as.")
    branch: str | None
    problem: str
    problem_code: str
    prompt: str | None = Field(description="The id of this target's open prompt, if any.")


class PromptFieldOut(BaseModel):
    name: str
    label: str
    secret: bool
    value: str = Field(description="A value to pre-fill (the expected account; never a secret)")


class PromptOutBody(BaseModel):
    id: str
    target: str
    fields: list[PromptFieldOut]
    reason: str
    reason_code: str
    cause: str
    attempt: int
    max_attempts: int
    expected_account: str | None
    kind: Literal["fields", "open_url", "show_code"] = Field(
        default="fields", description="fields: answer the fields; open_url: open url in a "
        "browser, then answer {} (or {\"callback_url\": …}); show_code: show user_code and "
        "verification_uri, then answer {} to wait for the outcome")
    way_reason: str | None = Field(default=None, description="Why this link way (open_url, "
                                   "show_code)")
    url: str | None = Field(default=None, description="open_url: the target's sign-in page")
    redirect_uri: str | None = Field(default=None, description="open_url: where it returns")
    user_code: str | None = Field(default=None, description="show_code: the code to type")
    verification_uri: str | None = Field(default=None, description="show_code: where")
    verification_uri_complete: str | None = None
    expires_in: float | None = None


class PartyBody(Strict):
    """The party: its id, size and capacity (``size`` ≤ ``max``, each 1…1000)."""

    id: str | None = Field(default=None, max_length=128)
    size: int | None = Field(default=None, ge=1, le=1000, strict=True)
    max: int | None = Field(default=None, ge=1, le=1000, strict=True)


class JoinBody(Strict):
    """Where a buddy joins: an http(s) link or an application's own scheme."""

    url: str = Field(min_length=1, max_length=2048)


class ActivityBody(Strict):
    """Rich presence, as on the interapp server: every field optional; text fields one line
    of at most 128 characters; ``started_at`` RFC 3339 with an offset."""

    name: str | None = Field(default=None, max_length=128)
    details: str | None = Field(default=None, max_length=128)
    state: str | None = Field(default=None, max_length=128)
    party: PartyBody | None = None
    started_at: str | None = Field(default=None, max_length=40)
    join: JoinBody | None = None


class StateOut(BaseModel):
    agent: AgentInfo
    local: LocalOut | None
    user: str | None = Field(description="The local account signed in, or null.")
    presence: PresenceHeld
    activity: ActivityBody | None = Field(
        default=None, description="The activity held (rich presence, as PUT /agent/v1/activity "
                                  "takes it), or null.")
    targets: list[TargetRow]
    prompts: list[PromptOutBody]


class TargetsOut(BaseModel):
    targets: list[TargetRow]


class TargetIn(Strict):
    name: str = Name
    plugin: str = Field(min_length=1, max_length=64)
    server: str = Field(min_length=1, max_length=2048)
    client_id: str | None = Field(default=None, max_length=256)
    client_secret: str | None = Field(default=None, max_length=4096)
    account_system: Literal["shared", "separate"] = "separate"
    tls: bool | None = None
    options: dict[str, str] = Field(default_factory=dict, max_length=64)


class RemovedOut(BaseModel):
    removed: str


class ConnectIn(Strict):
    account: str | None = Field(default=None, min_length=1, max_length=256,
                                description="The remote account you mean (a link to another "
                                            "is refused).")
    reconnect: bool = Field(default=False, description="Run the flow again (re-link).")
    via: Literal["browser", "device", "password"] | None = Field(
        default=None, description="The link way to sign in with, should a sign-in be needed "
                                  "(default: the most secure one offered).")
    can: list[Literal["browser", "device", "password"]] | None = Field(
        default=None, max_length=3, description="The link ways this client can show "
        "(browser: open_url prompts, device: show_code prompts); default: password only.")
    headless: bool = Field(default=False, description="No browser where the client runs: "
                           "the device way is preferred.")


class LinkOut(BaseModel):
    target: str
    remote_account: str
    remote_account_id: str
    state: str
    reason: str
    server: str
    server_changed: bool
    created_at: str
    last_used: str | None
    id: str


class LinksOut(BaseModel):
    links: list[LinkOut]


class ConnectedBody(BaseModel):
    target: str
    branch: str
    account: str
    account_id: str
    display_name: str
    link: LinkOut | None
    explain: str = Field(description="The resolver's trace, step by step.")
    way: Literal["browser", "device", "password"] | None = Field(
        default=None, description="How the user signed in (None: no sign-in was needed).")
    way_reason: str | None = Field(default=None, description="Why that way: requested, "
                                   "remembered, headless, most_secure, only_way.")


class ConnectedOut(BaseModel):
    connected: ConnectedBody


class PromptOut(BaseModel):
    prompt: PromptOutBody


class PendingBody(BaseModel):
    target: str
    message: str


class PendingOut(BaseModel):
    pending: PendingBody


class DeclinedBody(BaseModel):
    id: str
    target: str


class DeclinedOut(BaseModel):
    declined: DeclinedBody


class AnswerIn(Strict):
    answers: dict[str, str] | None = Field(default=None, max_length=32)
    decline: bool = False


class AuditOut(BaseModel):
    ok: bool
    entries: int
    first_bad_seq: int | None
    reason: str


class UnlinkOut(BaseModel):
    target: str
    remote_revoked: bool | None = Field(description="True: revoked at the target; false: the "
                                                    "revocation failed; null: nothing to revoke")
    local_credential_destroyed: bool
    note: str


class BuddyOut(BaseModel):
    target: str
    id: str
    username: str
    display_name: str
    presence: State
    status_text: str
    groups: list[str]
    subscription: str
    activity: ActivityBody | None = Field(
        default=None, description="What they are doing (rich presence), or null.")
    activity_text: str = Field(default="", description="Its readable line "
                                                       "(\"Arena · Ranked 2v2 · 2/4 · 12 min\").")


class BuddiesOut(BaseModel):
    buddies: list[BuddyOut]
    problems: dict[str, ErrorBody]


class BuddyIn(Strict):
    target: str = Name
    user: str = Field(min_length=1, max_length=256)


class BuddyDone(BaseModel):
    target: str
    user: str
    action: Literal["add", "accept", "remove"]
    ok: bool


class MessageIn(Strict):
    target: str = Name
    to: str = Field(min_length=1, max_length=256)
    body: str = Field(min_length=1, max_length=8000)
    client_msg_id: str | None = Field(default=None, min_length=1, max_length=128,
                                      pattern=r"^[A-Za-z0-9._:-]+$",
                                      description="Give one to make retries safe: the same id "
                                                  "is sent once.")


class MessageOut(BaseModel):
    target: str
    id: str
    sender: str
    recipient: str
    body: str
    sent_at: str
    client_msg_id: str | None
    own: bool


class HistoryOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    target: str
    with_: str = Field(alias="with")
    messages: list[MessageOut]


class PresenceIn(Strict):
    state: State
    status_text: str = Field(default="", max_length=200)


class PresenceOut(BaseModel):
    state: State
    status_text: str
    targets: list[str]
    errors: dict[str, str]


class LocalIn(Strict):
    server: str = Field(min_length=1, max_length=2048)
    client_id: str = Field(min_length=1, max_length=256)
    client_secret: str | None = Field(default=None, max_length=4096)


class LocalSet(BaseModel):
    server: str
    client_id: str
    issuer: str
    username: str | None


class SessionIn(Strict):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=4096)


class SessionOut(BaseModel):
    username: str
    display_name: str
    issuer: str


class SignedOut(BaseModel):
    signed_out: bool
