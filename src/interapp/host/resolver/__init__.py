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

States (:class:`State`)::

    START ─┬─▶ AWAIT_ASSERTION ──▶ AWAIT_ASSERTION_LOGIN ──▶ DONE
           │        │ refused            │ refused
           │        ▼                    ▼
           ├─▶ AWAIT_STORED_LOGIN ──▶ DONE            (and ──unreachable──▶ FAILED)
           │        │ refused
           │        ▼
           └─▶ AWAIT_PROMPT ◀──▶ AWAIT_PROMPT_LOGIN ──▶ DONE | FAILED

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
    Resolver,
    State,
    TraceStep,
    describe_action,
)
from interapp.host.resolver.model import (
    EVENT_TYPES,
    FAILURE_CODES,
    AccountSystem,
    Action,
    AssertionObtained,
    AssertionRefused,
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
)
from interapp.plugins.contract import PromptField

__all__ = [
    "EVENT_TYPES",
    "FAILURE_CODES",
    "TRANSITIONS",
    "AccountSystem",
    "Action",
    "AssertionObtained",
    "AssertionRefused",
    "Branch",
    "Connected",
    "Event",
    "Failed",
    "LinkSnapshot",
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
    "describe_action",
]
