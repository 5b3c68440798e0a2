"""Link-or-prompt resolution (claim 1 of US 9,451,014) as a sans-I/O state machine.

Theory of operation
-------------------
The host wants to connect its logged-in *local account* to a *target* (an opposite
application). :class:`Resolver` decides **how**, without doing any I/O itself, in the manner of
h11 and matrix-nio: the driver calls :meth:`Resolver.start`, performs the *actions* it gets
back (log in, show a prompt, write the vault, ...), turns each outcome into an *event* and feeds
it to :meth:`Resolver.send`, which returns the next actions. The machine reads no clock, opens
no socket and never looks inside a credential; it only decides.

Four branches:

1. **Shared account system** (``account_system == "shared"`` and the plug-in supports
   assertion login): :class:`RequestAssertion` (RFC 8693 token exchange at the local app), then
   :class:`LoginWithAssertion` (RFC 7523 jwt-bearer grant at the target). No prompt, no link.
   A refusal at either step is recorded in the trace and the separate-system flow (2 or 3)
   takes over.
2. **Stored link** (link ``linked`` or ``degraded``): :class:`LoginWithStoredCredential`. No
   prompt. A refusal leads to branch 4; an unreachable target marks the link ``degraded`` and
   fails with ``connection_lost`` (the host retries with backoff; nobody is prompted because of
   a network error).
3. **No link**: :class:`Prompt` for the fields the plug-in declares, :class:`LoginWithAnswers`;
   *only on success* :class:`StoreLink`. Interactive prompts may be retried up to
   ``max_attempts``; non-interactive answers get exactly one attempt.
4. **Re-authentication** (link ``needs_reauth`` or ``revoked``, or refused in branch 2):
   :class:`MarkLink` ``needs_reauth``, prompt again, and on success :class:`RepairLink` — the
   *same* link. A login as a *different* remote account is refused: :class:`RevokeCredential`
   for the credential just obtained, then ``Failed("link_mismatch")``.

**Link ways** (branches 3 and 4): the user signs in through the *browser*, with a *device*
code, or with the *password* fields. :class:`ResolveRequest` names the ways the target and the
face both offer (``ways``), the one asked for (``requested_way``, ``--via``) and whether
there is a display (``headless``); the resolver chooses once per resolution, with a
:class:`WayReason`: the way asked for; on re-authentication the way the link was made with
(:attr:`LinkSnapshot.way`); headless, the device code over the browser; else the most secure
one (browser > device > password). The password way emits :class:`Prompt` as always; the
others emit :class:`Authorize` (one attempt), answered by ``LoginSucceeded`` or
:class:`AuthorizationFailed` (the RFC's error code: ``access_denied``, ``expired_token``,
``invalid_grant``, or ``authorization_mismatch``), and a success stores (or repairs) the link
with the way, exactly as a password sign-in does.

States (:class:`State`)::

    START ─┬─▶ AWAIT_ASSERTION ──▶ AWAIT_ASSERTION_LOGIN ──▶ DONE
           │        │ refused            │ refused
           │        ▼                    ▼
           ├─▶ AWAIT_STORED_LOGIN ──▶ DONE            (and ──unreachable──▶ FAILED)
           │        │ refused
           │        ▼
           ├─▶ AWAIT_PROMPT ◀──▶ AWAIT_PROMPT_LOGIN ──▶ DONE | FAILED
           └─▶ AWAIT_AUTHORIZATION ──▶ DONE | FAILED     (browser or device way)

Each :meth:`~Resolver.send` returns a list of actions; at most one of them waits for an event
(:class:`RequestAssertion`, a ``Login*`` or :class:`Prompt`) and it comes last, or the list ends
with the terminal :class:`Connected` / :class:`Failed`. Actions before it (:class:`MarkLink`,
:class:`RecordAudit`, :class:`StoreLink`, ...) are side effects to perform in order.

The whole machine is the table :data:`TRANSITIONS`, ``(state, event type) → handler``; any
other pair raises :class:`ProtocolError`. Every step is appended to :attr:`Resolver.trace`
with a human note, rendered by :meth:`Resolver.explain` (``--explain``). Secrets only travel
inside :class:`~interapp.secret.Secret` or opaque credentials, and every repr, note and message
masks them.
"""

from __future__ import annotations

from interapp.host.resolver.machine import (
    TRANSITIONS,
    WAY_REASON_WORDS,
    Resolver,
    State,
    TraceStep,
    describe_action,
)
from interapp.host.resolver.model import (
    AUTHORIZATION_FAILURES,
    EVENT_TYPES,
    FAILURE_CODES,
    AccountSystem,
    Action,
    AssertionObtained,
    AssertionRefused,
    AuthorizationFailed,
    Authorize,
    Branch,
    Connected,
    Event,
    Failed,
    LinkSnapshot,
    LoginRefused,
    LoginSucceeded,
    LoginWithAnswers,
    LoginWithAssertion,
    LoginWithStoredCredential,
    MarkLink,
    Prompt,
    PromptAnswered,
    PromptDeclined,
    PromptReason,
    PromptUnavailable,
    ProtocolError,
    RecordAudit,
    RepairLink,
    RequestAssertion,
    ResolveRequest,
    RevokeCredential,
    StoreLink,
    TargetUnavailable,
    WayReason,
    WayRefused,
)
from interapp.plugins.contract import LinkWay, PromptField

__all__ = [
    "AUTHORIZATION_FAILURES",
    "EVENT_TYPES",
    "FAILURE_CODES",
    "TRANSITIONS",
    "WAY_REASON_WORDS",
    "AccountSystem",
    "Action",
    "AssertionObtained",
    "AssertionRefused",
    "AuthorizationFailed",
    "Authorize",
    "Branch",
    "Connected",
    "Event",
    "Failed",
    "LinkSnapshot",
    "LinkWay",
    "LoginRefused",
    "LoginSucceeded",
    "LoginWithAnswers",
    "LoginWithAssertion",
    "LoginWithStoredCredential",
    "MarkLink",
    "Prompt",
    "PromptAnswered",
    "PromptDeclined",
    "PromptField",
    "PromptReason",
    "PromptUnavailable",
    "ProtocolError",
    "RecordAudit",
    "RepairLink",
    "RequestAssertion",
    "ResolveRequest",
    "Resolver",
    "RevokeCredential",
    "State",
    "StoreLink",
    "TargetUnavailable",
    "TraceStep",
    "WayReason",
    "WayRefused",
    "describe_action",
]
